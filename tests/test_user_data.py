"""Your own data (issue #16): ``task.data`` reads a JSONL/Parquet file, a saved dataset or a folder of data files,
maps its columns onto the verifier's example fields, refuses bad input before any work naming the key, and a
user's JSONL file trains an arm end to end on the tiny preset and is what ``llm-rl eval`` scores."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import datasets
import pytest
import yaml

import verifiers
from llm_rl import cli
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import validate_experiment
from llm_rl.harness.data import load_task
from llm_rl.harness.user_data import DatasetTask, task_verifier
from relabel_rl.config import ConfigError, load_config
from verifiers.base import split_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EASY = {
    "min_steps": 1,
    "max_steps": 2,
    "max_start": 9,
    "max_operand": 5,
    "max_multiplier": 2,
    "max_value": 30,
}
COLUMNS = {"prompt": "question", "answer": "final", "solution": "worked"}


def _chain_rows(n_train: int, n_test: int) -> list[dict]:
    """Chain-arithmetic problems as a user would store them: their own column names, the answer a number, no
    trailing newline on the question; ``start``/``operations`` are what the verifier's step check reads."""
    v = verifiers.load("chain_arithmetic")
    rows = [
        *v.generate(n_train, seed=7, split="train", **EASY),
        *v.generate(n_test, seed=7, split="test", **EASY),
    ]
    return [
        {
            "question": r["prompt"].rstrip("\n"),
            "final": int(r["answer"]),
            "worked": r["solution"],
            "start": r["start"],
            "operations": r["operations"],
        }
        for r in rows
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(**data) -> ExperimentConfig:
    return load_config(ExperimentConfig, data={"task": {"data": {"columns": COLUMNS, **data}}})


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory) -> Path:
    datasets.disable_progress_bars()
    return _write_jsonl(tmp_path_factory.mktemp("data") / "mine.jsonl", _chain_rows(48, 16))


# --- loading and mapping ---------------------------------------------------------------------------------------


def test_a_jsonl_file_becomes_task_rows_split_by_prompt_hash(jsonl):
    task = task_verifier(_cfg(path=str(jsonl)))
    assert isinstance(task, DatasetTask) and task.name == "chain_arithmetic"
    train, test = (
        list(task.generate(1000, seed=0, split="train")),
        list(task.generate(1000, seed=0, split="test")),
    )
    assert (len(train), len(test)) == (48, 16)  # at most the split's rows: a dataset is finite
    assert all(split_of(r["prompt"]) == "train" for r in train) and all(
        split_of(r["prompt"]) == "test" for r in test
    )
    row = test[0]
    assert row["prompt"].endswith("\n") and row["answer"] == str(
        row["final"]
    )  # delimiter added, number -> text
    assert row["solution"] == row["worked"] and row["num_steps"] == len(row["solution"].splitlines())
    assert task.score(row["solution"], row) == 1.0 and task.score("Answer: -1", row) == 0.0
    assert (
        task.check_step([], row["solution"].splitlines()[0], row) is True
    )  # the extra columns reach the verifier
    # prefix-stable and seeded, like a generator
    assert list(task.generate(5, seed=0, split="train")) == train[:5]
    assert [r["prompt"] for r in task.generate(5, seed=1, split="train")] != [r["prompt"] for r in train[:5]]


def test_the_harness_trains_and_evaluates_on_the_users_rows(jsonl):
    cfg = load_config(
        ExperimentConfig,
        data={"task": {"data": {"path": str(jsonl), "columns": COLUMNS}, "train_size": 10, "test_size": 100}},
    )
    task = load_task(cfg)
    user_prompts = {r["question"] + "\n" for r in _chain_rows(48, 16)}
    assert len(task.train) == 10 and len(task.test) == 16  # test_size caps at the 16 held-out rows
    assert {r["prompt"] for r in task.train + task.test} <= user_prompts
    assert not {r["prompt"] for r in task.train} & {r["prompt"] for r in task.test}


def test_saved_datasets_parquet_and_folders_of_files_with_named_splits(tmp_path):
    rows = _chain_rows(20, 8)
    train_rows = [r for r in rows if split_of(r["question"] + "\n") == "train"]
    test_rows = [r for r in rows if r not in train_rows]
    dd = datasets.DatasetDict(
        {"training": datasets.Dataset.from_list(train_rows), "eval": datasets.Dataset.from_list(test_rows)}
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    task = task_verifier(_cfg(path=str(tmp_path / "saved"), train_split="training", test_split="eval"))
    assert len(task.generate(100, seed=0, split="test")) == len(test_rows)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "all.parquet"))
    task = task_verifier(_cfg(path=str(tmp_path / "all.parquet")))
    assert len(task.generate(100, seed=0, split="train")) == len(train_rows)
    folder = tmp_path / "files"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", rows[:20])
    _write_jsonl(
        folder / "test.jsonl", rows[20:] + rows[:2]
    )  # two test prompts also in train: dropped from train
    task = task_verifier(_cfg(path=str(folder), test_split="test"))
    train = task.generate(100, seed=0, split="train")
    assert len(train) == 18 and not {r["prompt"] for r in train} & {r["question"] + "\n" for r in rows[:2]}


def test_a_pickled_task_scores_without_its_rows(jsonl):
    """A containment worker receives the task pickled: the verifier travels, the rows do not."""
    task = task_verifier(_cfg(path=str(jsonl)))
    row = task.generate(1, seed=0, split="test")[0]
    copy = pickle.loads(pickle.dumps(task))
    assert copy.rows is None and copy.score(row["solution"], row) == 1.0
    assert len(pickle.dumps(task)) < len(pickle.dumps(task.rows))


# --- refused before any work, naming the key ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, match",
    [
        (
            {"columns": {}},
            r"'task\.data\.columns': .* has no 'prompt' column; map one with --task\.data\.columns",
        ),
        (
            {"columns": {**COLUMNS, "prompt": "questoin"}},
            r"'task\.data\.columns\.prompt': .* has no column 'questoin' \(did you mean 'question'\?\)",
        ),
        ({"test_split": "tset"}, r"'task\.data\.test_split': .* has no split 'tset'; its splits: train"),
        ({"train_split": "dev"}, r"'task\.data\.train_split': .* has no split 'dev'"),
        ({"path": "/nonexistent/data.jsonl"}, r"'task\.data\.path': /nonexistent/data\.jsonl does not exist"),
        ({"path": "someone/private-dataset"}, r"'task\.data\.path': cannot load someone/private-dataset"),
    ],
)
def test_bad_data_settings_name_the_key(jsonl, data, match):
    with pytest.raises(ConfigError, match=match):
        task_verifier(_cfg(**{"path": str(jsonl), **data}))


def test_empty_unreadable_and_null_data_name_the_key(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"'task\.data\.path': .*empty\.jsonl is empty"):
        task_verifier(_cfg(path=str(tmp_path / "empty.jsonl")))
    (tmp_path / "broken.jsonl").write_text('{"question": "1 + 1", "final": 2\n')
    with pytest.raises(ConfigError, match=r"'task\.data\.path': cannot load .*broken\.jsonl"):
        task_verifier(_cfg(path=str(tmp_path / "broken.jsonl")))
    rows = _chain_rows(8, 4)
    rows[3]["question"] = None
    with pytest.raises(ConfigError, match=r"'task\.data\.columns\.prompt': row 3 .* holds None, not text"):
        task_verifier(_cfg(path=str(_write_jsonl(tmp_path / "holes.jsonl", rows))))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"'task\.data\.path': .*notes\.txt is not a"):
        task_verifier(_cfg(path=str(tmp_path / "notes.txt")))


def test_the_warm_start_needs_a_solution_column_and_rows_have_no_difficulty(jsonl):
    no_solution = {"prompt": "question", "answer": "final"}
    with pytest.raises(ConfigError, match=r"has no 'solution' column"):
        task_verifier(_cfg(path=str(jsonl), columns=no_solution))
    cfg = load_config(
        ExperimentConfig,
        data={
            "task": {"data": {"path": str(jsonl), "columns": no_solution}},
            "warm_start": {"enabled": False},
        },
    )
    assert task_verifier(cfg).generate(1, seed=0, split="train")[0]["num_steps"] == 0  # no solution: unknown
    with pytest.raises(
        ConfigError, match=r"'task\.difficulty': rows from 'task\.data\.path' have no difficulty"
    ):
        task_verifier(
            load_config(ExperimentConfig, data={"task": {"data": {"path": str(jsonl)}, "difficulty": EASY}})
        )


def test_math_points_at_the_data_keys_and_accepts_a_users_file(tmp_path):
    with pytest.raises(
        ConfigError, match=r"'task\.verifier': 'math' has no task generator: give your rows with "
    ):
        validate_experiment(
            load_config(ExperimentConfig, data={"task": {"verifier": "math"}}), arms=["relabel"]
        )
    problems = [
        {"q": f"What is {a} + {b}?", "gold": a + b, "steps": f"{a} + {b} = {a + b}\nAnswer: {a + b}"}
        for a in range(9)
        for b in range(9)
    ]
    path = _write_jsonl(tmp_path / "sums.jsonl", problems)
    cfg = load_config(
        ExperimentConfig,
        data={
            "task": {
                "verifier": "math",
                "data": {
                    "path": str(path),
                    "columns": {"prompt": "q", "answer": "gold", "solution": "steps"},
                },
            }
        },
    )
    validate_experiment(cfg, arms=["relabel"])
    row = task_verifier(cfg).generate(1, seed=0, split="test")[0]
    assert verifiers.load("math").score(row["solution"], row) == 1.0


def test_the_shipped_own_data_recipe_validates(monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the recipe names its file relative to the repository, as a user runs it
    cfg = load_config(ExperimentConfig, root / "recipes" / "llm" / "own_data.yaml")
    validate_experiment(cfg, arms=cfg.compare.arms)
    task = task_verifier(cfg)
    assert (
        len(task.generate(10_000, seed=0, split="train")) + len(task.generate(10_000, seed=0, split="test"))
        == 400
    )


# --- end to end ---------------------------------------------------------------------------------------------------


def test_a_users_jsonl_file_trains_an_arm_and_llm_rl_eval_scores_it(tmp_path, jsonl, capsys):
    """The acceptance test of #16: `llm-rl train` on a recipe naming the user's file (tiny preset, SFT warm start on
    its `worked` column, then the relabeller), and `llm-rl eval RUN_DIR` — without --recipe — scores the same
    held-out rows of that file, reproducing the run's final pass@1."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "out"),
                "arm": "relabel",
                "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
                "task": {
                    "data": {"path": str(jsonl), "columns": COLUMNS},
                    "max_steps": 3,
                    "max_step_tokens": 12,
                    "max_completion_tokens": 40,
                },
                "warm_start": {"target_pass_rate": None, "max_steps": 8, "eval_every": 4, "batch_size": 8},
                "budget": {"axis": "generated_tokens", "limit": 150, "eval_every": 150},
                "eval": {"num_examples": 6, "pass_k": 2},
                "optim": {"prompts_per_step": 2, "checkpoint_every": 100},
                "relabel": {"puct": {"num_simulations": 2}, "num_candidates": 2},
            }
        )
    )
    assert cli.main(["train", str(recipe), "--no-such-flag", "1"]) == 2  # a typo costs nothing
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    assert cli.main(["train", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "[task.data]" in err and "48 train / 16 test rows" in err
    run = tmp_path / "out" / "runs" / "relabel-seed0"
    final = json.loads((run / "final_metrics.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "train" for r in records) and final["generated_tokens"] >= 150  # it trained
    warm = json.loads((tmp_path / "out" / "warm_start" / "warm_start.json").read_text())
    assert warm["sft_rows"] == 48 and warm["held_out_rows"] == 16  # the file's train rows; its test rows
    assert cli.main(["eval", str(run)]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["recipe"] == str((run / "config.yaml").resolve()) and result["task"] == "chain_arithmetic"
    assert f"task.data.path {jsonl}" in out.err and "the first 6 test rows" in out.err
    assert result["pass@1"] == final["pass@1"]
