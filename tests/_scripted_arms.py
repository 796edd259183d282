"""Test helpers of the tree-GRPO and RFT arms: a scripted verifier and backend, a spy verifier, and a few-step
`llm-rl train` recipe on the tiny preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_rl.generation import Continuation
from verifiers.base import Verifier


class AnswerIs7(Verifier):
    """Scores 1 when the first answer line says 7; ``check_step`` rejects a step containing "bad"."""

    name = "answer_is_7"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        for line in completion.splitlines():
            if line.startswith("Answer:"):
                return float(line.split(":", 1)[1].strip() == "7")
        return 0.0

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        return "bad" not in step


class SpyVerifier:
    """Wraps a verifier and records every ``score`` and ``check_step`` call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.step_delimiter = inner.step_delimiter
        self.has_step_checks = inner.has_step_checks
        self.scored: list[str] = []
        self.checked: list[tuple[tuple[str, ...], str]] = []

    def score(self, completion: str, example: dict) -> float:
        self.scored.append(completion)
        return self.inner.score(completion, example)

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        self.checked.append((tuple(previous_steps), step))
        return self.inner.check_step(previous_steps, step, example)

    def split_steps(self, completion: str) -> list[str]:
        return self.inner.split_steps(completion)

    def is_terminal_step(self, step: str) -> bool:
        return self.inner.is_terminal_step(step)


def cont(text: str, ending: str = "delimiter", *, delimiter: str = "\n", eos: int = 2) -> Continuation:
    """A continuation of ``text`` with char-code token ids, ended by the delimiter, EOS, or the token limit."""
    ids = tuple(ord(c) for c in text)
    if ending == "delimiter":
        ids += tuple(ord(c) for c in delimiter)
    elif ending == "eos":
        ids += (eos,)
    return Continuation(
        text=text, token_ids=ids, logprob=0.0, finished=ending == "eos", stopped=ending == "delimiter"
    )


class ScriptedBackend:
    """``script[prefix]``: the continuations of a prefix (cycled to n); records every call's arguments."""

    def __init__(self, script: dict[str, list[Continuation]]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.budget = None

    def sample(self, prefixes, *, n, max_new_tokens, temperature=1.0, stop="\n", generator=None):
        self.calls.append(
            {"prefixes": list(prefixes), "n": n, "max_new_tokens": max_new_tokens, "stop": stop}
        )
        return [[self.script[p][j % len(self.script[p])] for j in range(n)] for p in prefixes]


def train_recipe(out: Path, arm: str, **sections: Any) -> dict:
    """A few steps of ``arm`` on the tiny preset (no warm start), as `llm-rl train` runs a recipe."""
    data = {
        "output_dir": str(out),
        "arm": arm,
        "seed": 1,
        "model": {"name_or_path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
        "task": {
            "train_size": 8,
            "test_size": 4,
            "max_steps": 3,
            "max_step_tokens": 8,
            "max_completion_tokens": 24,
            "difficulty": {"min_steps": 1, "max_steps": 2},
        },
        "warm_start": {"enabled": False},
        "budget": {"axis": "generated_tokens", "limit": 600, "eval_every": 300},
        "eval": {"num_examples": 2, "pass_k": 2},
        "optim": {"learning_rate": 0.01, "prompts_per_step": 2, "checkpoint_every": 1},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def train_with_cli(out: Path, arm: str, *overrides: str, **sections: Any) -> list[dict]:
    """``llm-rl train R.yaml --arm ARM [overrides]`` of `train_recipe`; returns the run's metrics records."""
    import yaml

    from llm_rl.train import cmd_train
    from relabel_rl.rundir import read_metrics

    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(train_recipe(out, arm, **sections)))
    assert cmd_train([str(recipe), "--arm", arm, *overrides]) == 0
    run = out / "runs" / f"{arm}-seed1"
    assert (run / "final" / "config.json").exists()
    return read_metrics(run / "metrics.jsonl")


def same_records(a: list[dict], b: list[dict]) -> bool:
    """The train and eval records of two runs agree (timings aside)."""

    def strip(rs: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "wall_time"} for r in rs if r["kind"] in ("train", "eval")
        ]

    return strip(a) == strip(b)
