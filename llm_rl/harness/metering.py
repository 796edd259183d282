"""The metered resources an arm spends through, and the context (`StepContext`) that hands them to it.

Each resource charges the run's `Budget` itself, where the spending happens, so the arms never count anything and
every arm is counted the same way:

* the generation backend (`llm_rl.generation`): generated and prefill tokens (it is built with the budget);
* `MeteredVerifier`: one ``outcome_verifier_calls`` per score, one ``step_verifier_calls`` per ``check_step`` of a
  verifier that has step checks. This is the ONE count of verifier calls: the verifier records of a run take
  their ``calls``/``step_checks`` from the budget and only the failure counts from the contained verifier's
  statistics. `metered_reward_function` is the same meter for TRL's reward-function convention (GRPO).
  It also enforces the recipe's information setting, ``task.feedback``: under ``outcome`` an arm sees only the
  scores of finished completions, so ``has_step_checks`` is False and ``check_step`` raises `StepFeedbackError`
  (an arm that forgets the setting fails loudly instead of quietly receiving per-step ground truth the other arms
  do not get); under ``steps`` it answers and charges as the verifier can;
* `PromptBatch`: one ``prompts`` per training row the first time the arm reads it, so an arm that stops a batch
  part-way (the MC-value arm's last batch) is charged for the prompts it used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import verifiers
from llm_rl.harness.budget import Budget

__all__ = [
    "FEEDBACK",
    "MeteredVerifier",
    "PromptBatch",
    "StepContext",
    "StepFeedbackError",
    "metered_reward_function",
]

FEEDBACK = ("outcome", "steps")  # the values of `task.feedback`


class StepFeedbackError(RuntimeError):
    """An arm called ``check_step`` in a run whose ``task.feedback`` is ``outcome`` (a bug in the arm: it must
    use step checks only when the recipe gives them to every arm)."""


class MeteredVerifier:
    """A contained verifier (`verifiers.ContainedVerifier`) whose calls are charged to ``budget`` (or to nothing,
    when ``budget`` is None: the variance probe), and which gives an arm only the feedback of ``feedback`` (the
    recipe's ``task.feedback``; module docstring). It has the verifier methods an arm uses."""

    def __init__(
        self, contained: verifiers.ContainedVerifier, budget: Budget | None, *, feedback: str = "outcome"
    ) -> None:
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        self.contained = contained
        self.budget = budget
        self.feedback = feedback
        self.name = contained.name
        self.step_delimiter = contained.step_delimiter
        # Under `outcome` the arm is told there are no step checks (an arm that asks first never calls them).
        self.has_step_checks = contained.has_step_checks and feedback == "steps"

    def score(self, completion: str, example: dict) -> float:
        self.charge_outcomes(1)
        return self.contained.score(completion, example)

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if self.feedback == "outcome":
            raise StepFeedbackError(
                f"check_step was called under 'task.feedback: outcome' (verifier {self.name!r}): every arm sees "
                "only the scores of finished completions; an arm uses step checks only under 'task.feedback: steps'"
            )
        if not self.has_step_checks:  # nothing is asked of the verifier, nothing is charged
            return None
        if self.budget is not None:
            self.budget.charge(step_verifier_calls=1)
        return self.contained.check_step(previous_steps, step, example)

    def split_steps(self, completion: str) -> list[str]:
        return self.contained.split_steps(completion)

    def is_terminal_step(self, step: str) -> bool:
        return self.contained.is_terminal_step(step)

    def charge_outcomes(self, n: int) -> None:
        if self.budget is not None:
            self.budget.charge(outcome_verifier_calls=n)

    def failures(self) -> dict[str, int]:
        """This process's failure counts so far (`verifiers.VerifierStats` keys, calls excluded)."""
        return {k: v for k, v in self.contained.stats.as_dict().items() if k not in ("calls", "step_checks")}


def metered_reward_function(verifier: MeteredVerifier) -> Callable[..., list]:
    """``verifiers.reward_function`` (TRL's reward-function convention) scoring with ``verifier``'s contained
    verifier, each score charged: the function scores exactly the rows whose reward is not None."""
    inner = verifiers.reward_function(verifier.contained)

    def reward(prompts: list, completions: list, **columns: Any) -> list:
        rewards = inner(prompts, completions, **columns)
        verifier.charge_outcomes(sum(r is not None for r in rewards))
        return rewards

    reward.__name__ = reward.__qualname__ = inner.__name__
    return reward


class PromptBatch(Sequence[dict]):
    """The training rows of one batch; the first read of each row charges one prompt to ``budget``."""

    def __init__(self, rows: Sequence[dict], budget: Budget) -> None:
        self._rows = list(rows)
        self._read = [False] * len(self._rows)
        self._budget = budget

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]
        if not self._read[i]:
            self._read[i] = True
            self._budget.charge(prompts=1)
        return self._rows[i]

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))


@dataclass
class StepContext:
    """The concrete `llm_rl.arms.ArmContext` (see there): what ``collect`` may use for one batch.

    ``budget``/``budget_cfg`` are None for an unmetered context (the variance probe): nothing is charged and the
    budget never runs out.
    """

    policy: Any
    sampler: Any
    verifier: Any
    generator: torch.Generator | None
    updates_per_batch: int = 1
    budget: Budget | None = None
    budget_cfg: Any = None

    def out_of_budget(self) -> bool:
        # Prompts and optimizer steps are not spent while collecting: the harness sizes the batch instead.
        if self.budget is None or self.budget_cfg.axis in ("prompts", "optimizer_steps"):
            return False
        return self.budget.exhausted(self.budget_cfg)

    def batch_may_cross_limit(self) -> bool:
        if self.budget is None or self.budget_cfg.axis in ("prompts", "optimizer_steps"):
            return False
        spent = self.budget.value(self.budget_cfg.axis)
        batches = math.ceil(self.budget.optimizer_steps / self.updates_per_batch)
        return batches == 0 or self.budget_cfg.limit - spent < 2.0 * spent / batches
