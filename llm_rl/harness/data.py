"""The task data every arm trains and is evaluated on, the named evaluation splits, and the order the training
prompts are drawn in.

The task rows are the same for every arm and seed (generated with `DATA_SEED`): the run's seed varies the order,
the samples and the initialisation only. Three named splits (`SPLITS`), disjoint by construction:

* ``train`` — ``task.train_size`` rows of the verifier's train split: the RL prompts;
* ``test`` — the first ``task.test_size`` rows of the verifier's test split: what the report scores
  (``eval.split: test``, the first ``eval.num_examples`` of them);
* ``validation`` — ``task.validation_size`` more rows of the test split, drawn after the test rows: what
  `llm-rl tune` picks hyper-parameters on (``eval.split: validation``).

Why disjoint: the verifiers assign every prompt to train or test by a hash of its text, so no train row (of the RL
arms, or of the warm start's SFT data, also drawn from the train split) is ever a test or validation prompt; and
the validation rows are the rows of one ``generate(test_size + validation_size, split="test")`` draw that are not
test prompts — for the built-in generators exactly its last ``validation_size`` rows, since prompts are distinct
within a draw and ``generate(n)`` is a prefix of ``generate(m)`` for ``n < m`` (the filter keeps it true for a
plugin generator without that property). The test rows are drawn as before, so they do not move
(`tests/test_tune.py` checks all of it).

The validation split is test-split rows rather than unused train rows because the train split is what the arms
and the warm start learn from (the warm start's SFT rows are drawn from it with another seed, so an "unused" train
row could still be one it was trained on); no arm and no warm start ever trains on a test-split prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import verifiers
from llm_rl.harness.user_data import task_verifier
from relabel_rl.config import ConfigError

__all__ = ["DATA_SEED", "SPLITS", "PromptCursor", "TaskData", "check_task", "eval_rows", "load_task"]

DATA_SEED = 0
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskData:
    """The task of a recipe.

    Attributes:
      verifier: a `verifiers.ContainedVerifier` (failures score 0 and are counted in ``verifier.stats``).
      train: ``task.train_size`` rows of the train split (RL prompts).
      test: ``task.test_size`` rows of the test split (the report's rows).
      validation: ``task.validation_size`` test-split rows disjoint from ``test`` (drawn only when the recipe
        evaluates on them, ``eval.split: validation``; else empty).
    """

    verifier: verifiers.ContainedVerifier
    train: list[dict]
    test: list[dict]
    validation: list[dict] = field(default_factory=list)

    def split(self, name: str) -> list[dict]:
        """The rows of split ``name`` (one of `SPLITS`)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def _held_out(inner: verifiers.Verifier, cfg: Any, *, validation: bool) -> tuple[list[dict], list[dict]]:
    """The test rows and (when ``validation``) the validation rows (module docstring).

    The validation rows are the rows of one ``generate(test_size + validation_size, split="test")`` draw whose
    prompts are not test prompts: for the built-in generators (prefix-stable) exactly the draw's last
    ``validation_size`` rows; the filter makes the disjointness hold for any plugin generator too.
    """
    task = cfg.task
    difficulty = dict(task.difficulty)
    test = [dict(r) for r in inner.generate(task.test_size, seed=DATA_SEED, split="test", **difficulty)]
    if not validation:
        return test, []
    n = task.test_size + task.validation_size
    try:
        pool = inner.generate(n, seed=DATA_SEED, split="test", **difficulty)
    except ValueError as e:
        if "distinct" not in str(e):
            raise
        pool = []
    test_prompts = {r["prompt"] for r in test}
    rows = [dict(r) for r in pool if r["prompt"] not in test_prompts][: task.validation_size]
    if len(rows) < task.validation_size:
        raise ConfigError(
            f"'task.validation_size': the task cannot draw {task.test_size} test + {task.validation_size} "
            "validation rows with distinct prompts; lower 'task.validation_size' or 'task.test_size'"
        )
    return test, rows


def load_task(cfg: Any) -> TaskData:
    """Load ``task.verifier`` (contained, ``task.verifier_timeout``) and generate the rows of every split the
    recipe uses (module docstring)."""
    inner = task_verifier(cfg)  # the verifier, or its scoring over the user's rows (task.data)
    timeout = "auto" if cfg.task.verifier_timeout is None else cfg.task.verifier_timeout
    verifier = verifiers.ContainedVerifier(inner, timeout=timeout)
    difficulty = dict(cfg.task.difficulty)
    train = [
        dict(r) for r in inner.generate(cfg.task.train_size, seed=DATA_SEED, split="train", **difficulty)
    ]
    test, validation = _held_out(inner, cfg, validation=cfg.eval.split == "validation")
    return TaskData(verifier=verifier, train=train, test=test, validation=validation)


def eval_rows(cfg: Any, verifier: verifiers.Verifier | None = None) -> list[dict]:
    """The rows a run of ``cfg`` is evaluated on: the first ``eval.num_examples`` of split ``eval.split`` (for code
    that evaluates a checkpoint outside a run, e.g. `llm-rl eval`: the same rows the run used)."""
    inner = verifier if verifier is not None else task_verifier(cfg)
    test, validation = _held_out(inner, cfg, validation=cfg.eval.split == "validation")
    return (validation if cfg.eval.split == "validation" else test)[: cfg.eval.num_examples]


def check_task(cfg: Any, verifier: verifiers.Verifier) -> None:
    """The task checks that need the verifier (before any model is loaded): ``task.feedback: steps`` needs step
    checks; the evaluation split holds ``eval.num_examples`` rows.

    Raises:
      ConfigError: naming the keys at fault.
    """
    if cfg.task.feedback == "steps" and not verifier.has_step_checks:
        raise ConfigError(
            f"'task.feedback: steps' needs a verifier with step checks, and '{cfg.task.verifier}' "
            "(task.verifier) has none (its check_step always says None); use 'task.feedback: outcome'"
        )
    if cfg.eval.split == "validation" and cfg.eval.num_examples > cfg.task.validation_size:
        raise ConfigError(
            f"'eval.num_examples' ({cfg.eval.num_examples}) exceeds 'task.validation_size' "
            f"({cfg.task.validation_size}), the rows of 'eval.split: validation'"
        )


class PromptCursor:
    """Walks the training rows in a fresh seeded permutation each epoch; its state is two integers."""

    def __init__(self, num_rows: int, *, seed: int) -> None:
        if num_rows < 1:
            raise ValueError("the training set is empty")
        self.num_rows, self.seed = num_rows, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into the next epoch's permutation when needed)."""
        out = []
        while len(out) < k:
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.num_rows - self.position)
            out += self._order[self.position : self.position + take]
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
