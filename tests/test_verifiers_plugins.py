"""Writing a plugin (issue #16): the make_example contract, the conformance report, `llm-rl tasks` without importing
plugins, and `make-dataset` output that stays out of the repository."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from verifiers import Verifier, final_answer
from verifiers import cli as vcli
from verifiers.testing import ConformanceReport, check_verifier

REPO = Path(__file__).resolve().parents[1]


class Sum(Verifier):
    """Add numbers one at a time; every partial sum is a checkable line."""

    name = "sum_task"
    trusted = True

    def score(self, completion, example):
        return float(final_answer(completion) == example["answer"])

    def check_step(self, previous_steps, step, example):
        if self.is_terminal_step(step):
            return self.score(step, example) == 1.0
        numbers = [int(x) for x in example["numbers"].split()]
        k = len(previous_steps)
        return k < len(numbers) and step.strip() == f"total {sum(numbers[: k + 1])}"

    @staticmethod
    def make_example(rng: random.Random, *, min_steps: int = 2, max_steps: int = 3, top: int = 50) -> dict:
        if not 1 <= min_steps <= max_steps:
            raise ValueError("need 1 <= min_steps <= max_steps")
        numbers = [rng.randint(1, top) for _ in range(rng.randint(min_steps, max_steps))]
        lines = [f"total {sum(numbers[: i + 1])}" for i in range(len(numbers))]
        return {
            "prompt": f"Add {' '.join(map(str, numbers))}.\n",
            "answer": str(sum(numbers)),
            "solution": "\n".join([*lines, f"Answer: {sum(numbers)}"]),
            "num_steps": len(lines) + 1,
            "numbers": " ".join(map(str, numbers)),
        }


def test_make_example_alone_is_a_generator():
    task = Sum()
    assert task.has_generator and task.has_step_checks
    assert task.difficulty_knobs() == {"min_steps": 2, "max_steps": 3, "top": 50}
    rows = task.generate(6, seed=1, split="test", min_steps=4, max_steps=4).to_list()
    assert len(rows) == 6 and all(r["num_steps"] == 5 for r in rows)
    assert task.generate(3, seed=1, split="test", min_steps=4, max_steps=4).to_list() == rows[:3]
    with pytest.raises(ValueError, match=r"unknown difficulty knob\(s\) \['depth'\]; valid knobs.*top=50"):
        task.generate(2, seed=0, depth=3)


def test_a_verifier_without_make_example_has_no_generator():
    class OnlyScore(Verifier):
        name = "only_score"

        def score(self, completion, example):
            return 0.0

    v = OnlyScore()
    assert not v.has_generator and v.difficulty_knobs() == {}
    with pytest.raises(NotImplementedError, match="bring your own dataset"):
        v.generate(2, seed=0)


def test_check_verifier_returns_and_prints_what_it_checked(capsys):
    report = check_verifier(Sum(), n=6, check_worker=False)
    assert isinstance(report, ConformanceReport) and report.verifier == "sum_task" and report.rows == 6
    for check in (
        "deterministic generation",
        "train/test disjoint",
        "prompts end with the step delimiter",
        "min_steps/max_steps set the length",
        "gold solution scores 1",
        "step checks reject a wrong step",
    ):
        assert check in report.passed, check
    assert report.skipped == {"worker process": "check_worker=False"}
    printed = capsys.readouterr().out
    assert printed.startswith("verifier 'sum_task' conforms:") and "  ok    train/test disjoint" in printed
    assert str(report) == printed.rstrip("\n")
    quiet = check_verifier(Sum(), n=2, check_worker=False, verbose=False)
    assert capsys.readouterr().out == "" and quiet.passed


def test_check_verifier_catches_prompt_and_length_convention_breaks():
    class GluedPrompt(Sum):
        @staticmethod
        def make_example(rng, *, min_steps: int = 2, max_steps: int = 3) -> dict:
            row = Sum.make_example(rng, min_steps=min_steps, max_steps=max_steps)
            return {**row, "prompt": row["prompt"].rstrip("\n")}

    class StepsCountTheAnswer(Sum):
        @staticmethod
        def make_example(rng, *, min_steps: int = 2, max_steps: int = 3) -> dict:
            return Sum.make_example(rng, min_steps=max(1, min_steps - 1), max_steps=max(1, max_steps - 1))

    with pytest.raises(AssertionError, match="prompts end with the step delimiter"):
        check_verifier(GluedPrompt(), n=4, check_worker=False, verbose=False)
    with pytest.raises(AssertionError, match=r"min_steps/max_steps set the length.*expected 3"):
        check_verifier(StepsCountTheAnswer(), n=4, check_worker=False, verbose=False)


# --- `llm-rl tasks` lists plugins without importing them -----------------------------------------------------


def _install_fake_plugins(root: Path) -> Path:
    """Two plugin distributions on a path entry: one leaves a marker when imported, one fails to import."""
    marker = root / "IMPORTED"
    (root / "marker_plugin.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "from verifiers import Verifier\n\n"
        "class MarkerTask(Verifier):\n"
        '    """Count sheep; a plugin whose import leaves a marker."""\n'
        "    name = 'marker_task'\n"
        "    def score(self, completion, example):\n"
        "        return 0.0\n"
        "    def check_step(self, previous_steps, step, example):\n"
        "        return None\n"
        "    @staticmethod\n"
        "    def make_example(rng, *, sheep: int = 3):\n"
        "        return {'prompt': 'Count.\\n', 'answer': str(sheep), 'solution': f'Answer: {sheep}', 'num_steps': 1}\n"
    )
    (root / "broken_plugin.py").write_text(
        "raise ImportError('broken_plugin needs a package that is not installed')\n"
        "class Broken:\n"
        '    """A plugin that cannot be imported."""\n'
    )
    for dist, entry in (
        ("marker-plugin", "marker_task = marker_plugin:MarkerTask"),
        ("broken-plugin", "broken_task = broken_plugin:Broken"),
    ):
        info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[relabel_rl.verifiers]\n{entry}\n")
    return marker


def _llm_rl(args, path_entry: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(path_entry)])}
    return subprocess.run(
        [sys.executable, "-m", "llm_rl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=path_entry,
    )


def test_tasks_lists_plugins_without_importing_them(tmp_path):
    marker = _install_fake_plugins(tmp_path)
    done = _llm_rl(["tasks"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "plugin (marker-plugin)" in rows["marker_task"]
    assert rows["marker_task"].split("(marker-plugin)")[1].split()[:2] == ["yes", "yes"]
    assert "Count sheep; a plugin whose import leaves a marker." in rows["marker_task"]
    assert "A plugin that cannot be imported." in rows["broken_task"]
    assert "chain_arithmetic" in rows
    assert not marker.exists(), "`llm-rl tasks` imported a plugin"

    one = _llm_rl(["tasks", "marker_task"], tmp_path)  # describing one verifier loads it
    assert one.returncode == 0, one.stderr
    assert "knobs          sheep=3" in one.stdout and "prompt: 'Count.\\n'" in one.stdout
    assert marker.exists()
    broken = _llm_rl(["tasks", "broken_task"], tmp_path)
    assert broken.returncode == 2
    assert "cannot load verifier 'broken_task'" in broken.stderr and "not installed" in broken.stderr


# --- make-dataset writes outside the repository --------------------------------------------------------------


def test_make_dataset_default_out_and_refusals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert vcli.cmd_make_dataset(["chain_arithmetic", "--n", "3", "--seed", "0"]) == 0
    default = tmp_path / "runs" / "datasets" / "chain_arithmetic-train-n3-seed0"
    assert (default / "dataset_info.json").exists()
    assert str(default) in capsys.readouterr().out
    assert vcli.cmd_make_dataset(["chain_arithmetic", "--n", "4", "--seed", "0", "--out", str(default)]) == 0
    other = tmp_path / "project"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert vcli.cmd_make_dataset(["chain_arithmetic", "--n", "3", "--seed", "0", "--out", str(other)]) == 2
    assert "refusing to write into it" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_data_folder_is_git_ignored():
    done = subprocess.run(
        ["git", "check-ignore", "-q", "data/chain/dataset_info.json"], cwd=REPO, capture_output=True
    )
    assert done.returncode == 0, "data/ (the README's make-dataset --out) is not git-ignored"


def test_the_documented_plugin_conforms():
    doc = (REPO / "docs" / "verifiers.md").read_text()
    section = doc[doc.index("## Writing a plugin") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    namespace: dict = {}
    exec(compile(code, "docs/verifiers.md", "exec"), namespace)
    report = check_verifier(namespace["ReverseString"](), n=6, check_worker=False, verbose=False)
    assert report.knobs == {"length": 5} and "prompts end with the step delimiter" in report.passed
