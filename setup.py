"""The one build step of relabel-rl: compile tree_search's hot modules into C extensions with mypyc.

Everything else about the package is declared in pyproject.toml. Why and how the compiled core is used at run
time: tree_search/_native.py. It is optional: when mypyc or the C compiler fails, the package still installs, as
pure Python, and ``import tree_search`` warns (``tree_search.compiled`` is then False). Setting
``TREE_SEARCH_PURE_PYTHON=1`` skips the build. The build (mypy's type check, then the C compiler) takes about a
minute on a laptop-class CPU; its C sources and mypy's cache go to ``build/``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = "tree_search"


def _native_module():
    """tree_search/_native.py, loaded by path: the package itself cannot be imported before it is installed."""
    spec = importlib.util.spec_from_file_location("_tree_search_native", ROOT / PACKAGE / "_native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native = _native_module()


def mypyc_extensions() -> tuple[list, dict]:
    """The extensions mypyc generates for the hot modules, and the build record: that of a failure if there are
    none, else what build_ext completes."""
    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        return [], {"status": "skipped", "reason": f"{native.PURE_ENV} was set at install"}
    try:
        import mypy.version
        from mypyc.build import mypycify

        paths = [f"{PACKAGE}/{name}.py" for name in native.HOT_MODULES]
        # numpy is typed as Any (the build does not depend on which numpy, or whether one, is installed)
        options = ["--no-site-packages", "--ignore-missing-imports", "--cache-dir=build/mypy_cache"]
        # the shared library: tree_search/_core__mypyc.*.so, beside the modules' own small extensions
        extensions = mypycify([*options, *paths], opt_level="3", group_name=f"{PACKAGE}._core")
    except (Exception, SystemExit) as error:  # mypy reports type errors by exiting
        return [], {"status": "failed", "reason": f"mypyc: {type(error).__name__}: {error}"}
    for extension in extensions:
        extension.optional = True  # a C compiler error leaves the pure-Python package installable
        # No fused multiply-adds: every float operation rounds exactly as in CPython (bit-identical results)
        extension.extra_compile_args.append("-ffp-contract=off")
    return extensions, {"status": "compiled", "mypy": mypy.version.__version__}


EXTENSIONS, RECORD = mypyc_extensions()


def write_record(package_dir: Path, record: dict) -> None:
    package_dir.mkdir(parents=True, exist_ok=True)
    (package_dir / native.BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")


def output_package_dir(command) -> Path:
    """Where the built package lives: the source tree for editable installs, else the build directory."""
    if getattr(command, "editable_mode", False) or getattr(command, "inplace", False):
        return ROOT / PACKAGE
    return Path(command.build_lib) / PACKAGE


class BuildPy(build_py):
    """When nothing is compiled (build_ext does not run then): writes the build record, and removes the extensions
    an earlier editable build left in the source tree."""

    def run(self) -> None:
        super().run()
        if EXTENSIONS:
            return
        package_dir = output_package_dir(self)
        for name in (*native.HOT_MODULES, "_core__mypyc"):
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                (package_dir / f"{name}{suffix}").unlink(missing_ok=True)
        write_record(package_dir, RECORD)


class BuildExt(build_ext):
    """Builds the extensions, then records what was compiled (or that the C compiler failed)."""

    def run(self) -> None:
        super().run()
        package_dir = output_package_dir(self)
        missing = [
            ext.name
            for ext in self.extensions
            if not (package_dir.parent / self.get_ext_filename(ext.name)).exists()
        ]
        if missing:
            record = {"status": "failed", "reason": f"the C compiler did not build {', '.join(missing)}"}
        else:
            record = {**RECORD, "digest": native.source_digest(ROOT / PACKAGE)}
        write_record(package_dir, record)


setup(ext_modules=EXTENSIONS, cmdclass={"build_py": BuildPy, "build_ext": BuildExt})
