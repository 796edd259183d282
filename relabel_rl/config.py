"""One configuration convention for every entry point: YAML recipe → typed dataclasses → CLI overrides.

Why not `transformers.HfArgumentParser` / `trl.TrlParser`? Both are flat (one namespace of fields per dataclass)
and take YAML values as argparse *defaults*, so a YAML `lr: "fast"` is never type-checked. A relabel-rl recipe
is nested (``model:``, ``task:``, ``relabel:``, ``grpo:``, …), and the standards ask that a bad key or a wrong type
be rejected *before* any heavy work, with an error naming the key. So this module is a small strict loader:

* every section is a (frozen or not) dataclass; unknown keys are an error naming the dotted path and the nearest
  valid key; a sub-section given in part keeps the field's default for the rest (which may differ from the
  sub-section class's own defaults);
* values are checked against the field's annotation (``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal``,
  ``Optional``, ``list``, ``tuple``, ``dict``, nested dataclasses);
* CLI overrides are ``--section.key value`` (or ``--section.key=value``); the value is parsed as YAML, so
  ``--relabel.num_simulations 8`` gives an int and ``--grpo.beta 0.0`` a float.

Arms whose knobs belong to an upstream library (TRL's ``GRPOConfig``) keep those knobs in a dict that the arm
validates by constructing the upstream config, so TRL's own checks run early too.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")
_SCI_NOTATION = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

__all__ = ["ConfigError", "config_to_dict", "load_config", "parse_overrides", "to_yaml"]


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the offending key."""


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
      path: a YAML recipe. Either ``path`` or ``data`` (or neither, for all defaults).
      overrides: ``["--section.key", "value", ...]`` or an already-parsed ``{"section.key": value}``.
      data: an in-memory recipe, used instead of ``path``.

    Raises:
      ConfigError: naming the dotted key of the first problem found.
    """
    if path is not None and data is not None:
        raise ConfigError("give a recipe path or data, not both")
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a recipe must be a YAML mapping, got {type(loaded).__name__}")
        tree = _deep_copy(loaded)
    elif data is not None:
        tree = _deep_copy(dict(data))
    ov = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    for k, v in ov.items():
        _apply_override(tree, k, v)
    return _build(cls, tree, prefix="")


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def _build(cls: type[T], tree: Mapping[str, Any], prefix: str) -> T:
    if not isinstance(tree, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or '<root>'}' must be a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in tree:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            raise ConfigError(
                f"unknown key '{prefix}{key}'{hint}; valid keys here: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, value in tree.items():
        default = _default(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            # a partial sub-section overrides the *field's* default, not the section class's defaults: a
            # `relabel.puct: {num_simulations: 16}` keeps the relabeller's other PUCT settings
            value = {**config_to_dict(default), **value}
        kwargs[name] = _check(hints[name], value, f"{prefix}{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"missing required key '{prefix}{missing[0]}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


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
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
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
