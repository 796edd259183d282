"""Finding verifiers by name: built-ins, third-party plugins (entry points), and ``module:attr`` paths.

All loading goes through this one module so a name means the same thing in a recipe, on the command line and in
a test. Three sources:

* built-ins register themselves with :func:`register` when their module (listed in ``BUILTIN_MODULES``) is
  imported; the modules are small and import nothing heavy, so they are imported on the first lookup;
* plugins declare an entry point in the group ``relabel_rl.verifiers`` (entry name = verifier name, value =
  ``module:attr`` naming a :class:`Verifier` subclass, an instance, or a zero-argument factory). Entry points are
  *listed* without importing anything; a plugin's module is imported only when that verifier is loaded.
  :func:`read_source` describes a plugin from its source text (parsed, never run), for `llm-rl tasks`;
* ``load("some.module:attr")`` resolves a path directly, for experiments that do not want to package anything.

A name provided twice (two plugins, or a plugin shadowing a built-in) is an error naming both providers: a
silent winner would make results depend on install order.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from verifiers.base import Verifier

__all__ = [
    "ENTRY_POINT_GROUP",
    "SourceSummary",
    "VerifierInfo",
    "VerifierRegistryError",
    "available",
    "describe",
    "load",
    "read_source",
    "register",
]

ENTRY_POINT_GROUP = "relabel_rl.verifiers"
BUILTIN_MODULES = (
    "verifiers.tasks.chain_arithmetic",
    "verifiers.tasks.countdown",
    "verifiers.tasks.long_arithmetic",
    "verifiers.tasks.math_answer",
    "verifiers.tasks.python_code",
)

V = TypeVar("V", bound=type[Verifier])
_BUILTINS: dict[str, type[Verifier]] = {}
_builtins_imported = False


class VerifierRegistryError(LookupError):
    """An unknown, duplicated or malformed verifier name or path."""


@dataclass(frozen=True)
class VerifierInfo:
    """Where a verifier name comes from.

    Attributes:
      name: the verifier name.
      source: ``"built-in"`` or ``"plugin"``.
      target: ``module:attr`` the name resolves to.
      distribution: the installed distribution providing a plugin (None for built-ins).
    """

    name: str
    source: str
    target: str
    distribution: str | None = None


def register(cls: V) -> V:
    """Class decorator registering a built-in verifier under ``cls.name`` (duplicates are an error)."""
    if not (isinstance(cls, type) and issubclass(cls, Verifier)):
        raise TypeError(f"@register expects a Verifier subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    existing = _BUILTINS.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise VerifierRegistryError(f"verifier name {cls.name!r} registered twice: {existing!r} and {cls!r}")
    _BUILTINS[cls.name] = cls
    return cls


def _import_builtins() -> None:
    global _builtins_imported
    if not _builtins_imported:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_imported = True


def _discover() -> dict[str, VerifierInfo]:
    """Every known name -> its info, built-ins and (unimported) plugins; duplicates raise."""
    _import_builtins()
    infos = {
        name: VerifierInfo(name, "built-in", f"{cls.__module__}:{cls.__qualname__}")
        for name, cls in _BUILTINS.items()
    }
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry.dist.name if entry.dist is not None else None
        info = VerifierInfo(entry.name, "plugin", entry.value, distribution)
        previous = infos.get(entry.name)
        if previous is not None and previous != info:
            raise VerifierRegistryError(
                f"verifier name {entry.name!r} is provided twice: by {_provider(previous)} and by {_provider(info)}; "
                "uninstall one of them or rename its entry point"
            )
        infos[entry.name] = info
    return infos


def _provider(info: VerifierInfo) -> str:
    if info.source == "built-in":
        return f"built-in {info.target}"
    return f"plugin {info.distribution or '?'} ({info.target})"


def available() -> list[str]:
    """Sorted names of every verifier: built-ins and installed plugins (plugins are not imported)."""
    return sorted(_discover())


def describe() -> list[VerifierInfo]:
    """:class:`VerifierInfo` for every available verifier, sorted by name."""
    infos = _discover()
    return [infos[name] for name in sorted(infos)]


def load(name_or_path: str, **kwargs: Any) -> Verifier:
    """A verifier instance from a registered name or a ``module:attr`` path; ``kwargs`` go to its constructor."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise VerifierRegistryError(f"expected a verifier name or 'module:attr', got {name_or_path!r}")
    if ":" in name_or_path:
        return _instantiate(_import_target(name_or_path), name_or_path, kwargs)
    infos = _discover()
    info = infos.get(name_or_path)
    if info is None:
        close = difflib.get_close_matches(name_or_path, list(infos), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise VerifierRegistryError(
            f"unknown verifier {name_or_path!r}{hint}; available: {', '.join(sorted(infos))}. "
            "Plugins register through the entry-point group 'relabel_rl.verifiers'."
        )
    target = _BUILTINS[info.name] if info.source == "built-in" else _import_target(info.target)
    verifier = _instantiate(target, name_or_path, kwargs)
    if verifier.name != info.name:
        raise VerifierRegistryError(
            f"entry point {info.name!r} ({info.target}) produced a verifier named {verifier.name!r}; "
            "the entry-point name and the verifier's `name` must match"
        )
    return verifier


def _import_target(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise VerifierRegistryError(f"malformed verifier path {path!r}; expected 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name.strip())
    except ImportError as error:
        raise VerifierRegistryError(
            f"cannot import module {module_name!r} for verifier {path!r}: {error}"
        ) from error
    for part in attr.strip().split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise VerifierRegistryError(
                f"module {module_name!r} has no attribute {attr!r} (verifier {path!r})"
            ) from None
    return obj


def _instantiate(target: Any, label: str, kwargs: dict[str, Any]) -> Verifier:
    if isinstance(target, Verifier):
        if kwargs:
            raise VerifierRegistryError(
                f"{label} is a verifier instance; it takes no arguments, got {sorted(kwargs)}"
            )
        return target
    if isinstance(target, type) and not issubclass(target, Verifier):
        raise VerifierRegistryError(
            f"{label} names the class {target.__qualname__}, which is not a Verifier subclass"
        )
    if not callable(target):
        raise VerifierRegistryError(f"{label} names {target!r}: not a Verifier subclass, instance or factory")
    factory: Callable[..., Any] = target
    verifier = factory(**kwargs)
    if not isinstance(verifier, Verifier):
        raise VerifierRegistryError(f"factory {label} returned {verifier!r}, not a Verifier")
    return verifier


# ---------------------------------------------------------------------------------------------------------------
# Describing a plugin without importing it


@dataclass(frozen=True)
class SourceSummary:
    """What a plugin's source says about its verifier, read without running it.

    Attributes:
      description: the first line of the class's (or factory's) docstring; "" when it has none.
      step_checks: whether the class defines ``check_step``; None when it cannot be told from the source (an
        instance, a factory, or a class inheriting from something other than ``Verifier``).
      generator: whether it defines ``generate`` or ``make_example``; None as above.
      path: the source file read.
    """

    description: str
    step_checks: bool | None
    generator: bool | None
    path: str


def _find_spec_without_importing(module: str) -> Any:
    """The spec of ``module`` from the installed finders, level by level, never importing a parent package
    (``importlib.util.find_spec("a.b")`` would import ``a``)."""
    path = None
    spec = None
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            try:
                spec = find(name, path)
            except (ImportError, ValueError, OSError):
                spec = None
            if spec is not None:
                break
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec


def read_source(target: str) -> SourceSummary | None:
    """Describe the ``module:attr`` a plugin's entry point names from the module's source text (parsed with
    :mod:`ast`, never imported). None when the source cannot be found or parsed, or ``attr`` is not in it."""
    module, _, attr = target.partition(":")
    spec = _find_spec_without_importing(module.strip())
    if spec is None or not spec.has_location or not str(spec.origin or "").endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None
    name = attr.strip().split(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
            direct = bases == {"Verifier"}  # otherwise a method may come from another base class
            return SourceSummary(
                _first_line(ast.get_docstring(node)),
                "check_step" in methods or (None if not direct else False),
                bool(methods & {"generate", "make_example"}) or (None if not direct else False),
                str(spec.origin),
            )
        if isinstance(node, ast.FunctionDef) and node.name == name:  # a factory
            return SourceSummary(_first_line(ast.get_docstring(node)), None, None, str(spec.origin))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return SourceSummary("", None, None, str(spec.origin))  # an instance
    return None


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
