"""Which implementation of the search's hot modules runs: C compiled by mypyc at install time, or the Python source.

Why a compiled core: with a cheap evaluator the search's own Python (descend, select, back up, one node per
simulation) dominates, and CPython spends most of it on dispatch, boxing and dict lookups that the typed source
does not need. mypyc (part of mypy) compiles ``HOT_MODULES`` unchanged into C extensions when the package is
installed (``setup.py``): their classes become C structs, their typed locals C doubles and ints, calls between
them direct C calls. The source stays the readable source of truth and the fallback; it is pure Python and runs
as is wherever the build did not happen or failed. Both give identical results
(``tests/test_tree_search_compiled.py`` runs the same searches through both and compares them bit for bit).

The build writes ``BUILD_RECORD`` beside the extensions: the SHA-256 of the sources it compiled, or why it did not
compile. At import (this module runs first, from ``tree_search/__init__.py``) the extensions are used only when
all of them are present and were built from the sources on disk; otherwise (an edited checkout, a failed build)
the Python source is loaded in their place, with a warning saying why and how to rebuild.
``TREE_SEARCH_PURE_PYTHON=1`` selects the source (and, at install, skips the build).

This module is standard library only: ``setup.py`` loads it by path, before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

__all__ = ["BUILD_RECORD", "HOT_MODULES", "PURE_ENV", "compiled", "load", "source_digest", "status"]

HOT_MODULES = ("tree", "_engine", "_puct", "_gumbel")  # in import order: each imports only those before it
BUILD_RECORD = "_native_build.json"
PURE_ENV = "TREE_SEARCH_PURE_PYTHON"
_PACKAGE = "tree_search"
_REBUILD = (
    "rebuild it with `pip install -e .` (or `pip install .`) in the project, or set TREE_SEARCH_PURE_PYTHON=1"
)


def source_digest(package_dir: Path) -> str:
    """SHA-256 over the hot modules' source files, in ``HOT_MODULES`` order."""
    digest = hashlib.sha256()
    for name in HOT_MODULES:
        digest.update((package_dir / f"{name}.py").read_bytes())
    return digest.hexdigest()


def _read_record(package_dir: Path) -> dict:
    try:
        return json.loads((package_dir / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _load_sources(package_dir: Path) -> None:
    """Import the hot modules from their ``.py`` files (where an extension of the same name would win)."""
    package = sys.modules[_PACKAGE]
    for name in HOT_MODULES:
        fullname = f"{_PACKAGE}.{name}"
        loader = importlib.machinery.SourceFileLoader(fullname, str(package_dir / f"{name}.py"))
        spec = importlib.util.spec_from_file_location(fullname, loader.path, loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        try:
            loader.exec_module(module)
        except BaseException:
            del sys.modules[fullname]
            raise
        setattr(package, name, module)


def load() -> tuple[bool, str]:
    """Decide between the extensions and the source, and load the source if needed: ``(compiled, why)``.

    Called once, by ``tree_search/__init__.py`` before it imports the hot modules.
    """
    package_dir = Path(sys.modules[_PACKAGE].__file__ or "").parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = []
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(f"{_PACKAGE}.{name}")
        compiled.append(spec is not None and (spec.origin or "").endswith(suffixes))
    record = _read_record(package_dir)
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        if any(compiled):
            _load_sources(package_dir)
        return False, f"{PURE_ENV} is set"
    if not any(compiled):
        reason = record.get("reason") or "the compiled core is not built"
        if record.get("status") == "failed":
            warnings.warn(
                f"tree_search: the compiled core failed to build ({reason}); the search runs as pure Python "
                f"(2-3x slower with a cheap evaluator); {_REBUILD}",
                RuntimeWarning,
                stacklevel=2,
            )
        return False, reason
    digest = source_digest(package_dir)
    if all(compiled) and record.get("status") == "compiled" and record.get("digest") == digest:
        for (
            name
        ) in HOT_MODULES:  # mypyc derives __file__ as if its shared library sat at the top level: fix it
            module = importlib.import_module(f"{_PACKAGE}.{name}")
            module.__file__ = module.__spec__.origin if module.__spec__ else module.__file__
        return True, "compiled with mypyc " + str(record.get("mypy", "?"))
    why = "its sources changed since it was built" if all(compiled) else "some of its modules are missing"
    warnings.warn(
        f"tree_search: the compiled core is out of date ({why}): running the Python source instead; {_REBUILD}",
        RuntimeWarning,
        stacklevel=2,
    )
    _load_sources(package_dir)
    return False, f"out of date: {why}"


if (
    __name__ == f"{_PACKAGE}._native"
):  # imported by the package (setup.py loads this file by path: no side effects)
    compiled, status = load()
