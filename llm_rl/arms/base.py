"""The arm contract: an arm is its data and its loss; the harness does everything else.

An arm is a config dataclass (its recipe section, in `llm_rl.arm_configs`) plus one of two classes:

* `Arm` — the hand-written arms (relabel, mc_value, your own). Two methods make the algorithm::

      collect(examples, ctx) -> Batch       # spend budget (sample, verify) on a batch of training prompts
      loss(batch, policy) -> (loss, metrics) # the differentiable loss of (a minibatch of) that batch

  The harness (`llm_rl.harness.loop`) calls ``collect`` once per batch of ``optim.prompts_per_step`` prompts and
  ``loss`` once per optimiser update (``optim.epochs`` x ``optim.minibatches`` per batch: it splits
  ``Batch.items`` into minibatches itself), and owns the rest: the prompt order, the optimiser, the budget and its
  stop rule, evaluation, checkpoints and exact resume, logging, progress, and multi-process runs.
* `TrlArm` — an arm whose update is a TRL trainer (GRPO). It translates the recipe into the trainer's config;
  the harness's TRL bridge (`llm_rl.harness.trl_bridge`) runs the trainer and reports into the same budget,
  evaluation, checkpoint and logging code the loop uses.

``ctx`` (`ArmContext`) is everything ``collect`` may use: the policy, a metered sampler and a metered verifier
(each charges the run's budget itself, so an arm never counts anything), the step's seeded generator, and two
read-only questions about the budget for arms that stop a batch part-way. An arm file therefore never mentions
checkpoints, processes or budget bookkeeping, and reads top to bottom like a CleanRL file.

Every arm may also define ``gradient_sample(example, ctx)``: one stochastic estimate of its loss for ONE prompt
(for the gradient-variance probe; ``ctx`` is then unmetered). `Arm` derives it from ``collect`` + ``loss``.

Arms are registered by name in `llm_rl.arms` (``ARMS``); a recipe may also name any `Arm` subclass as
``arm: package.module:ClassName``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from llm_rl.config import ExperimentConfig

if TYPE_CHECKING:  # annotations only: both load transformers, which importing the arms does not need
    from llm_rl.generation.base import GenerationBackend
    from llm_rl.model.policy import Policy

__all__ = ["Arm", "ArmContext", "ArmVerifier", "Batch", "TrlArm", "numpy_rng"]


class ArmVerifier(Protocol):
    """The verifier an arm sees (metered: every ``score`` and every ``check_step`` of a verifier with step checks
    is charged to the budget). Failures are contained: a broken verifier scores 0 and never raises."""

    name: str
    step_delimiter: str
    has_step_checks: bool

    def score(self, completion: str, example: dict) -> float: ...
    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None: ...
    def split_steps(self, completion: str) -> list[str]: ...
    def is_terminal_step(self, step: str) -> bool: ...


class ArmContext(Protocol):
    """What ``collect`` may use (see the module docstring).

    Attributes:
      policy: the policy being trained (in eval mode while collecting).
      sampler: the metered generation backend (``sample``, ``greedy``, ``prefix_values``).
      verifier: the metered, contained verifier.
      generator: the torch generator of this batch (seeded by the harness; checkpointed).
      updates_per_batch: ``optim.epochs * optim.minibatches``: above 1 the batch is trained on after the policy
        has moved, so an arm with an importance ratio records the sampling policy's log-probs while collecting.
    """

    policy: Policy
    sampler: GenerationBackend
    verifier: ArmVerifier
    generator: torch.Generator | None
    updates_per_batch: int

    def out_of_budget(self) -> bool:
        """The budget is spent: stop spending (finish with what was collected so far)."""
        ...

    def batch_may_cross_limit(self) -> bool:
        """What is left of the budget is under twice the average cost of a batch so far (or no batch finished yet):
        an arm whose batch is expensive collects it prompt by prompt and stops at `out_of_budget`."""
        ...


@dataclass
class Batch:
    """What ``collect`` hands to ``loss``: ``items`` (what minibatches are cut from: episodes, completions, ...)
    and ``stats`` (numbers about the batch for the train records, e.g. the mean reward)."""

    items: Sequence[Any]
    stats: dict[str, float] = field(default_factory=dict)


class _ArmBase(ABC):
    """What every arm has: a registry name, its recipe, an early config check, and a per-prompt gradient."""

    name: ClassVar[str]

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        """Check the arm's recipe section before anything heavy runs; raise `relabel_rl.ConfigError` naming the
        key. Default: nothing beyond the section's own dataclass checks."""
        return

    def gradient_sample(self, example: dict, ctx: ArmContext) -> torch.Tensor:
        """One stochastic estimate of this arm's loss for ONE prompt (``loss.backward()`` gives a per-prompt
        gradient estimate); ``ctx`` is unmetered. Arms without one raise NotImplementedError."""
        raise NotImplementedError(f"the {self.name} arm defines no per-prompt gradient estimate")


class Arm(_ArmBase):
    """A hand-written arm: ``collect`` + ``loss`` (module docstring)."""

    @abstractmethod
    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        """Spend budget on ``examples`` (training rows) and return what the loss needs."""

    @abstractmethod
    def loss(self, batch: Batch, policy: Policy) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of ``batch`` (or of a minibatch of it: same type, fewer ``items``) and metrics to log."""

    def gradient_sample(self, example: dict, ctx: ArmContext) -> torch.Tensor:
        """``collect`` one prompt, then its ``loss`` (on-policy)."""
        with torch.no_grad():
            batch = self.collect([dict(example)], ctx)
        loss, _ = self.loss(batch, ctx.policy)
        return loss


class TrlArm(_ArmBase):
    """An arm run by a TRL trainer (GRPO); the harness's TRL bridge runs it (module docstring)."""

    @abstractmethod
    def trainer_class(self) -> type:
        """The TRL trainer class to run (e.g. `trl.GRPOTrainer` or a subclass of it). The bridge subclasses it to
        meter generation, and sets ``verifier`` (the metered `ArmVerifier`) on the instance before the trainer's
        ``__init__`` runs, for a subclass that checks steps itself (GRPO's process supervision)."""

    @abstractmethod
    def trainer_args(self, output_dir: str, *, max_steps: int) -> Any:
        """The TRL trainer's config (e.g. `trl.GRPOConfig`) for this recipe, checkpoints written to
        ``output_dir``, at most ``max_steps`` optimizer steps (the harness's bound: it stops the trainer itself
        when the budget is spent); validated by TRL (raise `relabel_rl.ConfigError` naming the recipe key)."""


def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator drawn from a torch generator's stream (for arms that need NumPy randomness, e.g. a
    search's root noise and move sampling), so one seeded stream drives the whole batch."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
