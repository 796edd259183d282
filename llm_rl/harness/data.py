"""The task data every arm trains and is evaluated on, and the order the training prompts are drawn in.

The task rows are the same for every arm and seed (generated with `DATA_SEED`): the run's seed varies the order,
the samples and the initialisation only. Evaluation uses the first ``eval.num_examples`` rows of the test split,
which no arm trains on (the verifiers' train/test splits are disjoint by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import verifiers
from llm_rl.harness.user_data import task_verifier

__all__ = ["DATA_SEED", "PromptCursor", "TaskData", "load_task"]

DATA_SEED = 0


@dataclass(frozen=True)
class TaskData:
    """The task of a recipe.

    Attributes:
      verifier: a `verifiers.ContainedVerifier` (failures score 0 and are counted in ``verifier.stats``).
      train: ``task.train_size`` rows of the train split (RL prompts).
      test: ``task.test_size`` rows of the test split; evaluation uses the first ``eval.num_examples``.
    """

    verifier: verifiers.ContainedVerifier
    train: list[dict]
    test: list[dict]


def load_task(cfg: Any) -> TaskData:
    """Load ``task.verifier`` (contained, ``task.verifier_timeout``) and generate the train and test rows."""
    inner = task_verifier(cfg)  # the verifier, or its scoring over the user's rows (task.data)
    timeout = "auto" if cfg.task.verifier_timeout is None else cfg.task.verifier_timeout
    verifier = verifiers.ContainedVerifier(inner, timeout=timeout)
    difficulty = dict(cfg.task.difficulty)
    train = [
        dict(r) for r in inner.generate(cfg.task.train_size, seed=DATA_SEED, split="train", **difficulty)
    ]
    test = [dict(r) for r in inner.generate(cfg.task.test_size, seed=DATA_SEED, split="test", **difficulty)]
    return TaskData(verifier=verifier, train=train, test=test)


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
