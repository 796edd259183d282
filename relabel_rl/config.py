"""One configuration convention for every entry point: YAML recipe → typed dataclasses → CLI overrides.

Why not `transformers.HfArgumentParser` / `trl.TrlParser`? Both are flat (one namespace of fields per dataclass)
and take YAML values as argparse *defaults*, so a YAML `lr: "fast"` is never type-checked. A relabel-rl recipe
is nested (``model:``, ``task:``, ``relabel:``, ``grpo:``, …), and the standards ask that a bad key, a wrong type
or a value out of range be rejected *before* any heavy work, with an error naming the key. So this module is a
small strict loader:

* every section is a (frozen or not) dataclass; unknown keys are an error naming the dotted path and the nearest
  valid key; a sub-section given in part keeps the field's default for the rest (which may differ from the
  sub-section class's own defaults);
* values are checked against the field's annotation (``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal``,
  ``Optional``, ``list``, ``tuple``, ``dict``, nested dataclasses);
* every field declares its range where it has one, with :func:`knob` — TRL's ``metadata={"help": ...}``
  convention plus ``ge``/``gt``/``le``/``lt``/``choices``/``check`` — and every float is finite unless the field
  says ``finite=False`` (YAML reads ``1e400`` as ``inf``). All fields of all sections are checked together when
  the config is loaded, and every problem is reported at once, one line per dotted key; cross-field rules stay
  in the section's ``__post_init__`` (a ``ValueError`` there is reported under the section's name);
* CLI overrides are ``--section.key value`` (or ``--section.key=value``); the value is parsed as YAML, so
  ``--relabel.num_simulations 8`` gives an int and ``--grpo.beta 0.0`` a float;
* :func:`config_help` renders every override key with its type, default, range and help — the ``--help`` of a
  command that takes a recipe.

Arms whose knobs belong to an upstream library (TRL's ``GRPOConfig``) keep those knobs in a dict that the arm
validates by constructing the upstream config, so TRL's own checks run early too.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")
_SCI_NOTATION = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

__all__ = [
    "DISTINCT",
    "NONEMPTY",
    "PATH_OR_HUB_ID",
    "Check",
    "ConfigError",
    "config_help",
    "config_to_dict",
    "docstring_text",
    "knob",
    "load_config",
    "parse_overrides",
    "to_yaml",
    "validate",
]


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the offending key(s).

    ``problems`` lists every problem found (one line each, each naming its dotted key); the message is the one
    problem, or all of them under a count.
    """

    def __init__(self, message: str | None = None, *, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [str(message)]
        if message is None:
            message = (
                self.problems[0]
                if len(self.problems) == 1
                else f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
            )
        super().__init__(message)


# ---------------------------------------------------------------------------------------------------------------
# Declaring a field: knob()


@dataclasses.dataclass(frozen=True)
class Check:
    """A predicate on a field's whole value, with the words that complete "must be ..." in errors and help."""

    test: Callable[[Any], bool]
    says: str

    def __call__(self, value: Any) -> bool:
        return bool(self.test(value))


def _looks_like_path_or_hub_id(value: str) -> bool:
    if value and Path(value).expanduser().exists():
        return True
    # Not on disk: acceptable only as a hub id ("name" or "org/name"); "/x/y", "./x", "~/x", "a/b/c" are paths.
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", value) is not None


NONEMPTY = Check(lambda v: len(v) > 0, "non-empty")
DISTINCT = Check(lambda v: len(set(v)) == len(v), "free of repeats")
PATH_OR_HUB_ID = Check(
    _looks_like_path_or_hub_id, "an existing local path or a hub id ('name' or 'org/name')"
)

_RANGE_KEYS = ("ge", "gt", "le", "lt")


def knob(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # the metadata key TRL's configs and HfArgumentParser use
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    finite: bool = True,
    check: Check | None = None,
) -> Any:
    """A dataclass field with its help text and its valid values, checked by :func:`load_config`.

    ``x: int = knob(8, ge=1, help="simulations per move")``. A list/dict default is copied for each instance
    (no ``default_factory`` needed). ``ge``/``gt``/``le``/``lt``/``choices`` apply to a number or string value,
    or to every item of a list/tuple value; ``check`` to the whole value; ``None`` (an ``Optional`` field left
    null) passes them all. Floats must be finite unless ``finite=False``.

    Returns a ``dataclasses.Field``; its ``metadata`` holds ``help`` (as TRL's configs do) and the range.
    """
    metadata: dict[str, Any] = {"help": help}
    for name, bound in zip(_RANGE_KEYS, (ge, gt, le, lt)):
        if bound is not None:
            metadata[name] = bound
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if not finite:
        metadata["finite"] = False
    if check is not None:
        metadata["check"] = check
    if isinstance(default, list | dict | set):  # a private copy per instance, as default_factory would give
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _fmt(x: Any) -> str:
    if isinstance(x, int) and x >= 2**20 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return f"{x:g}" if isinstance(x, float) else repr(x)


def range_text(meta: Mapping[str, Any]) -> str:
    """``"in [5, 19]"``, ``"> 0"``, ``"one of a, b"``... for a field's metadata (empty when unconstrained)."""
    parts = []
    low = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if low and high:
        parts.append(f"in {low[0]}{_fmt(low[1])}, {_fmt(high[1])}{high[0]}")
    elif low:
        parts.append(f"{'>=' if low[0] == '[' else '>'} {_fmt(low[1])}")
    elif high:
        parts.append(f"{'<=' if high[0] == ']' else '<'} {_fmt(high[1])}")
    if "choices" in meta:
        parts.append("one of " + ", ".join(str(c) for c in meta["choices"]))
    if "check" in meta:
        parts.append(meta["check"].says)
    return "; ".join(parts)


def _scalar_problems(key: str, value: Any, meta: Mapping[str, Any]) -> list[str]:
    if isinstance(value, float) and meta.get("finite", True) and not math.isfinite(value):
        return [f"'{key}' must be a finite number, got {value}"]
    if "choices" in meta and value not in meta["choices"]:
        return [f"'{key}' must be one of {list(meta['choices'])}, got {value!r}"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        bad = (
            ("ge" in meta and not value >= meta["ge"])
            or ("gt" in meta and not value > meta["gt"])
            or ("le" in meta and not value <= meta["le"])
            or ("lt" in meta and not value < meta["lt"])
        )
        if bad:
            return [
                f"'{key}' must be {range_text({k: meta[k] for k in _RANGE_KEYS if k in meta})}, got {value!r}"
            ]
    return []


def _value_problems(key: str, value: Any, meta: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``value`` for a field with metadata ``meta`` (empty when nothing is)."""
    if value is None or dataclasses.is_dataclass(value):
        return []
    out = []
    check = meta.get("check")
    if check is not None:
        try:
            ok = check(value)
        except Exception as e:  # a predicate that cannot even look at the value: the value is wrong
            ok, detail = False, f" ({type(e).__name__}: {e})"
        else:
            detail = ""
        if not ok:
            out.append(f"'{key}' must be {check.says}, got {value!r}{detail}")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            out += _scalar_problems(f"{key}[{i}]", item, meta)
    elif isinstance(value, dict):
        for k, item in value.items():
            out += _scalar_problems(f"{key}.{k}", item, {"finite": meta.get("finite", True)})
    else:
        out += _scalar_problems(key, value, meta)
    return out


def validate(cfg: Any, *, prefix: str = "") -> None:
    """Check every field of a config built in code (``dataclasses.replace``, a constructor) against its knob.

    :func:`load_config` already does this; call it on configs you build yourself.

    Raises:
      ConfigError: listing every field out of range, by dotted key.
    """
    problems = _instance_problems(cfg, prefix)
    if problems:
        raise ConfigError(problems=problems)


def _instance_problems(cfg: Any, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _instance_problems(value, f"{prefix}{f.name}.")
        else:
            out += _value_problems(f"{prefix}{f.name}", value, f.metadata)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Overrides


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--a.b", "3", "--c=x"]`` into ``{"a.b": 3, "c": "x"}`` (values parsed as YAML scalars/lists)."""
    out: dict[str, Any] = {}
    i = 0
    args = list(args)
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ConfigError(f"expected an override like '--section.key value', got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override '--{key}' has no value")
            raw = args[i + 1]
            i += 2
        try:
            out[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override '--{key}': cannot parse value {raw!r}: {e}") from None
    return out


def _apply_override(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '--{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    data: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a YAML file (or ``data``), then apply CLI-style overrides; validate everything.

    Args:
      cls: the top-level config dataclass.
      path: a YAML recipe. Either ``path`` or ``data`` (or neither, for all defaults). An empty file is an
        error (write ``{}`` to mean "all defaults").
      overrides: ``["--section.key", "value", ...]`` or an already-parsed ``{"section.key": value}``.
      data: an in-memory recipe, used instead of ``path``.

    Raises:
      ConfigError: naming the dotted key of every problem found (unknown keys, types, ranges, cross-field rules).
    """
    if path is not None and data is not None:
        raise ConfigError("give a recipe path or data, not both")
    tree: dict[str, Any] = {}
    if path is not None:
        tree = _read_recipe(Path(path))
    elif data is not None:
        tree = _deep_copy(dict(data))
    ov = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    for k, v in ov.items():
        _apply_override(tree, k, v)
    return _build(cls, tree, prefix="")


def _read_recipe(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {e.object[e.start : e.start + 1]!r} at offset {e.start}); "
            "a recipe is YAML text"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the recipe: {e.strerror or e}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {' '.join(str(e).split())}") from None
    if loaded is None:
        raise ConfigError(f"{p}: the recipe is empty; write its keys (or '{{}}' to run every default)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: a recipe must be a YAML mapping, got {type(loaded).__name__}")
    return _deep_copy(loaded)


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def _build(cls: type[T], tree: Mapping[str, Any], prefix: str) -> T:
    """Type-check ``tree`` against ``cls``, range-check every field (given or default), then construct.

    Every problem of this section and the sections below it is collected; one ConfigError lists them all.
    """
    if not isinstance(tree, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or '<root>'}' must be a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    problems: list[str] = []
    for key in tree:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            problems.append(
                f"unknown key '{prefix}{key}'{hint}; valid keys here: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in tree:
            given = tree[name]
            default = _default_of(f)
            if dataclasses.is_dataclass(default) and isinstance(given, Mapping):
                # a partial sub-section overrides the *field's* default, not the section class's defaults: a
                # `relabel.puct: {num_simulations: 16}` keeps the relabeller's other PUCT settings
                given = {**config_to_dict(default), **given}
            try:
                kwargs[name] = value = _check(hints[name], given, key)
            except ConfigError as e:
                problems += e.problems
                continue
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(value):
                problems += _instance_problems(value, f"{key}.")
        else:
            problems.append(f"missing required key '{key}'")
            continue
        problems += _value_problems(key, value, f.metadata)
    if problems:
        raise ConfigError(problems=problems)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a cross-field rule of __post_init__
        if prefix and f"'{prefix}" in str(e):  # it already names its keys in full
            raise ConfigError(str(e)) from None
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(tp: Any, value: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` (only lossless conversions) or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(a, value, key)
            except ConfigError as e:
                if dataclasses.is_dataclass(a) and isinstance(value, Mapping):
                    raise e from None  # the section's own problems say more than "must be X | None"
        raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"'{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise ConfigError(f"'{key}' must be a mapping (section), got null")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        (item_tp,) = get_args(tp) or (Any,)
        return [_check(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"'{key}' must have {len(args)} items, got {len(value)}")
        return tuple(
            _check(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args or [Any] * len(value), value))
        )
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_check(kt, k, f"{key}.<key>"): _check(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, str) and _SCI_NOTATION.fullmatch(value.strip()):
        # PyYAML follows YAML 1.1, where `3e-4` (no dot) is a string; users mean the number.
        value = float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"'{key}' must be a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"'{key}': unsupported config type {_type_name(tp)}")


# ---------------------------------------------------------------------------------------------------------------
# Help: every key with its type, default, range and help


def _type_label(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_label(a) for a in get_args(tp))
    if origin is Literal:
        return "{" + ",".join(str(a) for a in get_args(tp)) + "}"
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list[{_type_label(args[0])}]" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    return {int: "int", float: "float", bool: "bool", str: "str", Path: "path"}.get(tp, _type_name(tp))


def _yaml_inline(value: Any) -> str:
    text = yaml.safe_dump(config_to_dict(value), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def config_help(cls: type, *, width: int = 110) -> str:
    """Every key of ``cls`` as ``--section.key TYPE (default ...; range)`` and its help, section by section."""
    lines = ["Recipe keys (write them in the YAML recipe, or override one with --section.key VALUE):"]
    _help_lines(cls, "", lines, width)
    return "\n".join(lines)


def _help_lines(cls: type, prefix: str, lines: list[str], width: int, defaults: Any = None) -> None:
    """``defaults``: the instance a parent field defaults to (its values are this section's defaults)."""
    hints = typing.get_type_hints(cls)
    sections = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append((f.name, tp, _default_of(f)))
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default_of(f)
        facts = ["required" if default is dataclasses.MISSING else f"default {_yaml_inline(default)}"]
        rng = range_text(f.metadata)
        if rng:
            facts.append(rng)
        lines.append(f"  --{prefix}{f.name} {_type_label(tp)}  ({'; '.join(facts)})")
        if f.metadata.get("help"):
            lines += textwrap.wrap(
                " ".join(str(f.metadata["help"]).split()),
                width=width,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
            )
    for name, tp, section_default in sections:
        doc = docstring_text(tp.__doc__ or "").split("\n\n")[0]
        if not doc or doc.startswith(tp.__name__):  # the dataclass's generated docstring says nothing
            doc = ""
        lines += ["", *textwrap.wrap(f"{prefix}{name}:  {doc}", width=width, subsequent_indent="    ")]
        given = getattr(defaults, name) if defaults is not None else section_default
        _help_lines(tp, f"{prefix}{name}.", lines, width, given if dataclasses.is_dataclass(given) else None)


def docstring_text(doc: str) -> str:
    """A docstring as plain text for a terminal: dedented, without reST markup (````x````, ```x```, ``:role:`x```)."""
    text = textwrap.dedent(doc).strip() if doc else ""
    if "\n" in text:  # the first line of a docstring is not indented; the rest is
        first, rest = text.split("\n", 1)
        text = first + "\n" + textwrap.dedent(rest)
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"`([^`]+)`", r"\1", text)


# ---------------------------------------------------------------------------------------------------------------
# Serialising


def config_to_dict(cfg: Any) -> Any:
    """A plain, YAML-safe dict of a (nested) config dataclass: what a run directory records."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML; ``load_config(type(cfg), data=yaml.safe_load(to_yaml(cfg)))`` round-trips."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
