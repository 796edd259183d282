"""A foreign top-level `verifiers` (PrimeIntellect's package has our import name) stops `llm-rl` with one message
naming it and the fix, without importing it (issue #16); and `llm-rl <recipe command> --help` (issue #15/#16)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_rl import cli
from relabel_rl.environment import foreign_verifiers

REPO = Path(__file__).resolve().parents[1]


def _foreign_package(root: Path, *, with_dist_info: bool, with_module: bool = True) -> None:
    """A stand-in for `pip install verifiers`: a top-level `verifiers` package that leaves a marker if imported."""
    if with_module:
        pkg = root / "verifiers"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            "import pathlib\n"
            f"pathlib.Path({str(root / 'IMPORTED')!r}).write_text('foreign verifiers was imported')\n"
            "__version__ = '0.1.5'\n"
        )
    if with_dist_info:
        info = root / "verifiers-0.1.5.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: verifiers\nVersion: 0.1.5\n")
        (info / "top_level.txt").write_text("verifiers\n")


def _llm_rl(args, *, first: Path | None = None, last: Path | None = None):
    path = [str(p) for p in (first, REPO, last) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    # cwd: `python -m` puts the working directory first on sys.path; the repo must come from PYTHONPATH.
    return subprocess.run(
        [sys.executable, "-m", "llm_rl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=(first or last).parent,
    )


@pytest.mark.parametrize("with_dist_info", [False, True], ids=["bare-package", "installed-dist"])
def test_foreign_verifiers_first_on_the_path_stops_llm_rl(tmp_path, with_dist_info):
    _foreign_package(tmp_path, with_dist_info=with_dist_info)
    recipe = REPO / "recipes" / "quickstart.yaml"
    for args in (["tasks"], ["train", str(recipe)], ["verify", "--verifier", "countdown", "--input", "x"]):
        done = _llm_rl(args, first=tmp_path)
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr  # one message, no traceback
        message = lines[0]
        assert str(tmp_path / "verifiers") in message and "not relabel-rl's verifiers" in message
        assert "make setup" in message and "separate environment" in message
        if with_dist_info:
            assert "'verifiers' 0.1.5" in message
        assert done.stdout == ""
    assert not (tmp_path / "IMPORTED").exists(), "the check imported the foreign package"


def test_a_second_distribution_claiming_verifiers_is_named(tmp_path):
    # After non-editable installs of both, ours may be the `verifiers/__init__.py` in place while the other's
    # distribution still claims the folder: uninstalling either would break the other.
    _foreign_package(tmp_path, with_dist_info=True, with_module=False)
    done = _llm_rl(["tasks"], last=tmp_path)
    assert done.returncode == 2
    assert "another installed distribution, 'verifiers' 0.1.5, also provides" in done.stderr
    assert str(REPO / "verifiers") in done.stderr and "make setup" in done.stderr


def test_our_own_verifiers_passes():
    assert foreign_verifiers() is None
    assert "__relabel_rl__ = True" in (REPO / "verifiers" / "__init__.py").read_text()


def test_recipe_command_help_is_plain_text_with_every_key(capsys):
    for command in ("train", "compare", "probe-variance", "eval"):
        assert cli.main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: llm-rl {command} ")
        assert "``" not in out and ":class:" not in out
        for key in (
            "--seed int",
            "--budget.limit float",
            "--optim.prompts_per_step int",
            "--model.lora.r int",
        ):
            assert key in out, (command, key)


def test_a_cli_piped_into_head_ends_without_a_traceback():
    """`llm-rl ... | head` (README): the entry points restore the default SIGPIPE action, so a reader that closes
    the pipe early ends the writer quietly instead of a BrokenPipeError traceback."""
    import subprocess
    import sys

    code = "import sys; {setup}\nfor _ in range(20000): print('x' * 500)\n"
    for setup, expect_traceback in (("pass", True), ("from relabel_rl.environment import quiet_broken_pipe; "
                                                     "quiet_broken_pipe()", False)):  # fmt: skip
        p = subprocess.Popen([sys.executable, "-c", code.format(setup=setup)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
        p.stdout.readline()
        p.stdout.close()  # the reader goes away, as `head -1` does
        err = p.stderr.read().decode()
        p.wait(timeout=60)
        assert ("BrokenPipeError" in err) is expect_traceback, err
