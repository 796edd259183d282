"""Shared test helpers for the tree-GRPO and RFT arms while they run on today's `llm_rl.loop.run_training`
(before the run harness gives every arm a metered verifier): a verifier that charges its calls to the run's
budget, a spy verifier, scripted continuations, and a few-step training run on the tiny preset."""

from __future__ import annotations

from collections.abc import Callable
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


class ChargedVerifier(SpyVerifier):
    """Charges one verifier call per score (and per step check of a verifier with step checks) to ``budget``:
    what the harness's metered verifier will do."""

    def __init__(self, inner: Any, budget: Any) -> None:
        super().__init__(inner)
        self.budget = budget

    def score(self, completion: str, example: dict) -> float:
        self.budget.add_verifier_calls(1)
        return self.inner.score(completion, example)

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if self.has_step_checks:
            self.budget.add_verifier_calls(1)
        return self.inner.check_step(previous_steps, step, example)


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


RECIPE = {
    "seed": 1,
    "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
    "task": {
        "train_size": 8,
        "test_size": 4,
        "max_steps": 3,
        "max_step_tokens": 8,
        "max_completion_tokens": 24,
        "difficulty": {"min_steps": 1, "max_steps": 2},
    },
    "budget": {"axis": "generated_tokens", "limit": 600, "eval_every": 300},
    "eval": {"num_examples": 2, "pass_k": 2},
    "optim": {"learning_rate": 0.01, "prompts_per_step": 2, "checkpoint_every": 1},
}


def train_on_loop(
    cfg: Any,
    run: Any,
    init_model: str,
    make_collect: Callable[[Any], Callable[..., Any]],
    loss_fn: Callable[..., Any],
) -> dict:
    """A run of an arm on today's `llm_rl.loop.run_training`: ``make_collect(verifier)`` gives the loop's
    ``collect`` for a verifier that charges the run's budget."""
    from llm_rl.budget import Budget
    from llm_rl.loop import load_task, run_training
    from llm_rl.models import load_policy
    from relabel_rl.rundir import seed_everything

    task = load_task(cfg)
    seed_everything(cfg.seed)
    policy = load_policy(init_model, dtype=cfg.model.dtype)
    budget = Budget()
    collect = make_collect(ChargedVerifier(task.verifier, budget))
    return run_training(
        cfg, run, policy, collect=collect, loss_fn=loss_fn, budget=budget, task=task, progress=False
    )
