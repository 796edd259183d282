"""tree_search's compiled core (mypyc, tree_search/_native.py) against its Python source: the same searches, the
same results bit for bit; and the loader's choices (pure-Python switch, out-of-date extensions)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tree_search

BATTERY = Path(__file__).with_name("_search_battery.py")


def _battery(*, pure: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TREE_SEARCH_PURE_PYTHON", None)
    if pure:
        env["TREE_SEARCH_PURE_PYTHON"] = "1"
    args = [sys.executable, str(BATTERY)]
    if importlib.util.find_spec("pyspiel") is not None:
        args.append("--go")
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out)


@pytest.mark.skipif(
    not tree_search.compiled,
    reason=f"the compiled core is not in use ({tree_search._native.status}); `pip install -e .` builds it",
)
def test_compiled_and_pure_python_searches_are_identical():
    compiled, pure = _battery(pure=False), _battery(pure=True)
    assert compiled["compiled"] is True and pure["compiled"] is False
    assert compiled["runs"].keys() == pure["runs"].keys() and len(compiled["runs"]) > 100
    for name in compiled["runs"]:
        assert compiled["runs"][name] == pure["runs"][name], name


def test_pure_python_switch_and_out_of_date_extensions(tmp_path):
    """``TREE_SEARCH_PURE_PYTHON=1`` loads the source; extensions built from other sources are not used (a
    warning says so); a failed build warns; with no extensions and no record, the source loads silently."""
    package = Path(tree_search.__file__).parent
    copy = tmp_path / "tree_search"
    copy.mkdir()
    for path in package.iterdir():  # the package as it is installed, extensions and build record included
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    probe = "import tree_search as t; print(t.compiled, t.tree.COMPILED, t._native.status)"

    def run(*, pure: bool = False) -> tuple[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TREE_SEARCH_PURE_PYTHON"}
        env["PYTHONPATH"] = str(tmp_path)
        if pure:
            env["TREE_SEARCH_PURE_PYTHON"] = "1"
        command = [sys.executable, "-W", "always", "-c", probe]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), done.stderr

    out, err = run(pure=True)
    assert out.startswith("False False") and "TREE_SEARCH_PURE_PYTHON" in out and not err
    out, err = run()
    built = out.startswith("True True")  # this checkout's compiled core, whatever this process runs
    assert built or out.startswith("False False")
    if built:
        assert not err
        with (copy / "_puct.py").open("a") as source:
            source.write("# edited after the build\n")
        out, err = run()
        assert out.startswith("False False out of date") and "out of date" in err and "RuntimeWarning" in err
    for path in copy.iterdir():  # no extensions: a failed build warns, no record at all is silent
        if path.suffix in (".so", ".pyd"):
            path.unlink()
    (copy / "_native_build.json").write_text('{"status": "failed", "reason": "no C compiler"}')
    out, err = run()
    assert out.startswith("False False no C compiler") and "failed to build (no C compiler)" in err
    (copy / "_native_build.json").unlink()
    out, err = run()
    assert out.startswith("False False") and not err
