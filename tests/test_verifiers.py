"""Verifiers: the conformance kit on every built-in, hand-written step checks, registry/plugins, TRL adapter, CLI."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import verifiers
from verifiers import cli
from verifiers.registry import VerifierRegistryError
from verifiers.tasks.expression import ExpressionError, evaluate
from verifiers.testing import check_verifier

MATH_ROWS = [
    {
        "prompt": "What is 1/2 + 1/4?",
        "answer": "\\frac{3}{4}",
        "solution": "1/2 = 2/4\n2/4 + 1/4 = 3/4\nAnswer: 3/4",
    },
    {"prompt": "Clips?", "answer": "Natalia sold 48 clips.\n#### 72", "solution": "48 + 24 = 72\nAnswer: 72"},
]


# --- the conformance kit on every built-in and the plugin ---------------------------------------------------


@pytest.mark.parametrize("name", ["chain_arithmetic", "countdown", "long_arithmetic", "reverse_string"])
def test_conformance_generated_tasks(name):
    check_verifier(name, n=8, seed=0)


def test_conformance_math_with_user_rows():
    check_verifier("math", examples=MATH_ROWS)


def test_conformance_python_code():
    check_verifier("python_code", n=3, seed=0)


def test_conformance_kit_catches_a_broken_verifier():
    class AlwaysOne(verifiers.Verifier):
        name = "always_one"

        def score(self, completion, example):
            return 1.0

    with pytest.raises(AssertionError, match=r"always_one.*garbage scores 0"):
        check_verifier(AlwaysOne(), examples=[{"prompt": "p", "solution": "Answer: 1"}], check_worker=False)
    with pytest.raises(AssertionError, match="no generator"):
        check_verifier(AlwaysOne(), check_worker=False)

    class LaxSteps(type(verifiers.load("chain_arithmetic"))):
        def check_step(self, previous_steps, step, example):
            return "=" in step or step.startswith("Answer:")

    with pytest.raises(AssertionError, match="step checks reject a wrong step"):
        check_verifier(LaxSteps(), n=2, check_worker=False)


def test_generation_rules():
    chain = verifiers.load("chain_arithmetic")
    rows = chain.generate(20, seed=3, min_steps=5, max_steps=5).to_list()
    assert all(row["num_steps"] == 6 and len(row["operations"].split()) == 5 for row in rows)
    assert all(verifiers.split_of(row["prompt"]) == "train" for row in rows)
    test_rows = chain.generate(20, seed=3, split="test").to_list()
    assert all(verifiers.split_of(row["prompt"]) == "test" for row in test_rows)
    with pytest.raises(ValueError, match=r"unknown difficulty knob.*max_step'.*valid knobs"):
        chain.generate(2, seed=0, max_step=3)
    with pytest.raises(ValueError, match=r"max_steps=3.5 is not a int"):
        chain.generate(2, seed=0, max_steps=3.5)
    assert chain.generate(1, seed=0, min_steps=3.0, max_steps="3")[0]["num_steps"] == 4
    tiny = {
        "min_steps": 1,
        "max_steps": 1,
        "max_start": 0,
        "max_operand": 1,
        "max_multiplier": 2,
        "max_value": 2,
    }
    with pytest.raises(ValueError, match="task space is too small"):
        chain.generate(10, seed=0, **tiny)
    with pytest.raises(ValueError, match="split must be one of"):
        chain.generate(2, seed=0, split="validation")
    with pytest.raises(NotImplementedError, match="no task generator"):
        verifiers.load("math").generate(2, seed=0)


# --- hand-written step checks -------------------------------------------------------------------------------


def _verdicts(verifier, steps, example):
    return [verifier.check_step(steps[:i], step, example) for i, step in enumerate(steps)]


def test_chain_arithmetic_steps():
    chain = verifiers.load("chain_arithmetic")
    example = {"start": 12, "operations": "+5 *3 -4", "answer": "47"}
    assert (
        _verdicts(chain, ["12 + 5 = 17", "17 * 3 = 51", "51 - 4 = 47", "Answer: 47"], example) == [True] * 4
    )
    assert chain.check_step([], "12 + 5 = 18", example) is False  # wrong arithmetic
    assert chain.check_step([], "12 * 5 = 60", example) is False  # wrong operation
    assert chain.check_step([], "11 + 5 = 16", example) is False  # wrong start value
    assert chain.check_step(["12 + 5 = 18"], "18 * 3 = 54", example) is True  # continues from its own value
    assert chain.check_step(["12 + 5 = 17", "17 * 3 = 51", "51 - 4 = 47"], "47 + 1 = 48", example) is False
    assert chain.check_step(["12 + 5 = 17"], "Answer: 48", example) is False
    assert chain.score("12 + 5 = 17\nAnswer: 47\nAnswer: 48", example) == 1.0  # the first answer line counts
    assert chain.score("Answer: 48\nAnswer: 47", example) == 0.0
    assert chain.is_terminal_step("Answer: 47") and not chain.is_terminal_step("17 * 3 = 51")
    assert chain.split_steps("12 + 5 = 17\n\n17 * 3 = 51\n") == ["12 + 5 = 17", "17 * 3 = 51"]


def test_countdown_steps_and_answers():
    countdown = verifiers.load("countdown")
    example = {"numbers": [3, 7, 12], "target": 33}
    assert _verdicts(countdown, ["3 * 7 = 21", "21 + 12 = 33", "Answer: (3 * 7) + 12"], example) == [True] * 3
    assert countdown.check_step([], "7 * 7 = 49", example) is False  # only one 7
    assert countdown.check_step([], "3 * 7 = 22", example) is False
    assert countdown.check_step(["3 * 7 = 21"], "3 + 12 = 15", example) is False  # 3 already used
    assert countdown.check_step([], "12 / 7 = 1", example) is False  # division must be exact
    for good in ("Answer: 3 * 7 + 12", "Answer: 12 + 7 * 3", "Answer: (7*3)+12"):
        assert countdown.score(good, example) == 1.0, good
    for bad in (
        "Answer: 3 * 7 + 12 + 0",
        "Answer: (3 + 7) * 3 + 3",
        "Answer: 33",
        "Answer: __import__('os')",
    ):
        assert countdown.score(bad, example) == 0.0, bad


def test_safe_expression_parser():
    assert evaluate("2 * (3 + 4) - 10 / 4") == (pytest.approx(11.5), [2, 3, 4, 10, 4])
    for bad in ("2 ** 3", "1 / 0", "(" * 20 + "1" + ")" * 20, "a + 1", "1 +", "-1", "1" * 300, "open('x')"):
        with pytest.raises(ExpressionError):
            evaluate(bad)


def test_long_arithmetic_steps():
    long = verifiers.load("long_arithmetic")
    addition = {"a": 4821, "op": "+", "b": 977, "answer": "5798"}
    steps = ["1 + 7 + 0 = 8", "2 + 7 + 0 = 9", "8 + 9 + 0 = 17", "4 + 0 + 1 = 5", "Answer: 5798"]
    assert _verdicts(long, steps, addition) == [True] * 5
    assert long.check_step(steps[:3], "4 + 0 + 0 = 4", addition) is False  # dropped the carry
    assert long.check_step(steps[:1], "2 + 7 + 0 = 8", addition) is False
    product = {"a": 347, "op": "*", "b": 25, "answer": "8675"}
    steps = ["347 * 5 = 1735", "347 * 20 = 6940", "1735 + 6940 = 8675", "Answer: 8675"]
    assert _verdicts(long, steps, product) == [True] * 4
    assert long.check_step(steps[:1], "347 * 2 = 694", product) is False  # place value missing
    assert long.check_step(steps[:2], "1735 + 6940 = 8665", product) is False
    assert long.score("Answer: 8675", product) == 1.0 and long.score("Answer: 8665", product) == 0.0


def test_math_verifier_equivalences():
    math_verifier = verifiers.load("math")
    assert math_verifier.score("Answer: 0.75", {"answer": "\\frac{3}{4}"}) == 1.0
    assert math_verifier.score("so the result is \\boxed{72}", {"answer": "#### 72"}) == 1.0
    assert math_verifier.score("Answer: 71", {"answer": "#### 72"}) == 0.0
    assert not math_verifier.trusted  # scored in a worker with a deadline by default
    with verifiers.ContainedVerifier(
        math_verifier
    ) as contained:  # the default path: a worker with a deadline
        assert contained.timeout == verifiers.DEFAULT_TIMEOUT
        assert contained.score("Answer: 0.75", {"answer": "\\frac{3}{4}"}) == 1.0
        assert contained.score("Answer: 0.7", {"answer": "\\frac{3}{4}"}) == 0.0
        assert contained.stats.as_dict() == {"calls": 2, "failures": 0}


# --- registry and the example plugin ------------------------------------------------------------------------


def test_plugin_is_discovered_through_its_entry_point():
    entry_points = importlib.metadata.entry_points(group="relabel_rl.verifiers")
    assert "reverse_string" in {ep.name for ep in entry_points}, (
        "run: pip install --no-deps -e examples/plugin_verifier"
    )
    assert "reverse_string" in verifiers.available()
    plugin = verifiers.load("reverse_string")
    assert type(plugin).__module__ == "example_verifier"
    info = {i.name: i for i in verifiers.describe()}["reverse_string"]
    assert info.source == "plugin" and info.distribution == "relabel-rl-example-verifier"
    assert plugin.score("Answer: cba", {"answer": "cba"}) == 1.0


COUNTDOWN_INSTANCE = verifiers.load("countdown")


def make_chain_verifier():
    return verifiers.load("chain_arithmetic")


def test_plugins_are_imported_only_when_loaded():
    code = (
        "import sys, verifiers\n"
        "assert 'reverse_string' in verifiers.available()\n"
        "assert 'example_verifier' not in sys.modules, 'listing imported the plugin'\n"
        "verifiers.load('reverse_string')\n"
        "assert 'example_verifier' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_load_accepts_classes_instances_and_factories():
    assert verifiers.load(f"{__name__}:COUNTDOWN_INSTANCE") is COUNTDOWN_INSTANCE
    assert verifiers.load(f"{__name__}:make_chain_verifier").name == "chain_arithmetic"
    with pytest.raises(VerifierRegistryError, match="instance; it takes no arguments"):
        verifiers.load(f"{__name__}:COUNTDOWN_INSTANCE", max_steps=3)


def test_registry_lookups_and_errors():
    assert {"chain_arithmetic", "countdown", "long_arithmetic", "math", "python_code"} <= set(
        verifiers.available()
    )
    assert verifiers.load("verifiers.tasks.countdown:Countdown").name == "countdown"
    assert verifiers.load("python_code", wall_seconds=2.0).limits.wall_seconds == 2.0
    with pytest.raises(VerifierRegistryError, match="did you mean 'countdown'"):
        verifiers.load("countdwn")
    with pytest.raises(VerifierRegistryError, match="no attribute"):
        verifiers.load("verifiers.tasks.countdown:Nope")
    with pytest.raises(VerifierRegistryError, match="not a Verifier subclass"):
        verifiers.load("json:JSONDecoder")


def test_duplicate_names_are_an_error(monkeypatch):
    fake = importlib.metadata.EntryPoint(
        "countdown", "example_verifier:ReverseString", "relabel_rl.verifiers"
    )
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        return [*found, fake] if kwargs.get("group") == "relabel_rl.verifiers" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(VerifierRegistryError, match="'countdown' is provided twice"):
        verifiers.available()
    fake = importlib.metadata.EntryPoint(
        "reverse_alias", "example_verifier:ReverseString", "relabel_rl.verifiers"
    )
    with pytest.raises(VerifierRegistryError, match="must match"):
        verifiers.load("reverse_alias")


# --- the TRL reward adapter ---------------------------------------------------------------------------------


def test_reward_function_strings_and_conversations():
    reward = verifiers.reward_function(verifiers.load("chain_arithmetic"))
    assert reward.__name__ == "chain_arithmetic"
    columns = {"answer": ["47", "47", "9"], "start": [12, 12, 4], "operations": ["+5 *3 -4"] * 2 + ["+5"]}
    completions = [
        "12 + 5 = 17\nAnswer: 47",
        [{"role": "assistant", "content": "Answer: 46"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Answer: 9"}]}],
    ]
    logged = {}
    rewards = reward(["p"] * 3, completions, trainer_state=object(), log_metric=logged.__setitem__, **columns)
    assert rewards == [1.0, 0.0, 1.0]
    assert logged == {"verifiers/chain_arithmetic/failure_rate": 0.0}
    mixed = reward(
        ["p"] * 2, ["Answer: 1", "Answer: 1"], answer=["1", "1"], verifier=["chain_arithmetic", "math"]
    )
    assert mixed == [1.0, None]
    assert reward.stats.as_dict()["calls"] == 4


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_tasks_make_dataset_and_verify(tmp_path, capsys):
    assert cli.cmd_tasks([]) == 0
    listing = capsys.readouterr().out
    assert "chain_arithmetic" in listing and "plugin (relabel-rl-example-verifier)" in listing

    out = tmp_path / "data"
    argv = ["countdown", "--n", "4", "--seed", "1", "--out", str(out), "--difficulty", "max_numbers=3"]
    assert cli.cmd_make_dataset(argv) == 0
    assert str(out) in capsys.readouterr().out
    import datasets

    rows = datasets.load_from_disk(str(out)).to_list()
    assert len(rows) == 4 and all(len(row["numbers"]) == 3 for row in rows)
    assert (
        cli.cmd_make_dataset(
            ["countdown", "--n", "2", "--seed", "1", "--out", str(out), "--difficulty", "x=1"]
        )
        == 2
    )
    assert "unknown difficulty knob" in capsys.readouterr().err

    completions = tmp_path / "completions.jsonl"
    lines = [{"completion": row["solution"], **row} for row in rows] + [
        {"completion": "Answer: 1", **rows[0]}
    ]
    completions.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert cli.cmd_verify(["--verifier", "countdown", "--input", str(completions)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1].removeprefix("summary: "))
    assert summary == {"verifier": "countdown", "n": 5, "mean": 0.8, "failures": {}}
    completions.write_text('{"no_completion": 1}\n')
    assert cli.cmd_verify(["--verifier", "countdown", "--input", str(completions)]) == 2
    assert "needs a string 'completion'" in capsys.readouterr().err


def test_gsm8k_rows_offline():
    from verifiers.tasks.gsm8k import GSM8K, gsm8k_row

    record = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether she sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    row = gsm8k_row("How many clips did Natalia sell?", record)
    assert row["answer"] == "72" and row["num_steps"] == 3
    assert row["solution"].splitlines()[-1] == "Answer: 72" and "<<" not in row["solution"]
    gsm8k = GSM8K()
    assert gsm8k.score(row["solution"], row) == 1.0 and gsm8k.score("Answer: 71", row) == 0.0
    assert gsm8k.is_terminal_step(gsm8k.split_steps(row["solution"])[-1])
    with pytest.raises(ValueError, match="no '####' line"):
        gsm8k_row("q", "no final answer")
