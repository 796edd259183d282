"""Arm 5: rejection-sampling fine-tuning (RFT) — sample, keep what the verifier accepts, imitate it. No credit
assignment at all.

Why this arm: every other arm assigns credit somehow (GRPO spreads one outcome over a completion's tokens, the MC arm
and tree GRPO give each step an advantage, the relabeller trains each step on a search target). Expert iteration
(STaR, Zelikman et al. 2022; ReST-EM, Singh et al. 2023; RFT, Yuan et al. 2023) assigns none: a verified completion
is imitated whole, an unverified one is dropped. It is the strongest cheap baseline ("A Sober Look at Progress in
LM Reasoning", arXiv 2504.07086, finds RL's gains modest next to SFT), and AlphaGo's story starts from imitation
too. If this arm matches the others, the data, not the credit, is what helps.

The algorithm, for each batch of prompts:

1. **Sample.** ``num_samples`` (N) completions per prompt: one batched ``backend.sample(prompts, n=N, stop=None)``
   at ``temperature``, up to ``task.max_completion_tokens`` tokens.
2. **Filter**, in this order: keep a completion when its verifier score is ``>= threshold``; with ``dedupe`` drop
   a completion whose text equals an earlier passing one of the same prompt; with ``feedback="steps"`` drop one with a
   step ``verifier.check_step`` rejects (its steps checked in order up to the first rejection, so only passing,
   distinct completions cost step checks; with ``"outcome"`` ``check_step`` is never called); with
   ``max_kept_per_prompt`` keep at most that many (the first in sampling order: the samples are i.i.d., so that is a
   uniform choice).
3. **Loss.** Supervised fine-tuning on the kept completions: the token-mean negative log-likelihood (temperature 1:
   the policy itself) of their sampled tokens, EOS included when it was sampled, given the prompt::

       loss = - sum_{y kept} sum_t log pi(y_t | x, y_<t) / sum_{y kept} |y|

   A batch with nothing kept has no gradient (its optimiser step changes nothing but the step count).

**The per-prompt gradient estimate (for the variance probe) is defined**: for ONE prompt x, draw N completions, filter
them as above, and take ``g(x) = grad`` of the loss over that prompt's kept completions (``g = 0`` when none is
kept). It is a stochastic estimate of the arm's expected update direction for x, as a GRPO group's gradient is of
GRPO's. Why it is the same kind of object as the policy-gradient arms' estimates: summed over sequences instead of
averaged over tokens, with temperature 1 and neither dedupe nor a cap, its expectation is::

    E[ sum_i 1(r(y_i) >= threshold) grad log pi(y_i | x) ] = N grad P_pi(r >= threshold | x)

— RFT's update is REINFORCE on the 0/1 reward ``1(r >= threshold)`` with no baseline (the RAFT/ReST-EM view). The
token mean, dedupe and the cap make it a ratio estimator (biased, consistent), not a different kind of quantity; its
noise — all of it from which completions happen to be kept — is exactly what the probe measures, and a prompt whose
N samples all fail gives g = 0, counted apart as the probe does a GRPO group with equal rewards.

Where it departs from the papers: it is *online* (each batch sampled from the current policy, one optimiser update per
batch unless the harness's epochs/minibatches say more), like RAFT (Dong et al. 2023) rather than STaR's and ReST-EM's
outer iterations that collect a whole dataset and fine-tune the base model again from scratch; STaR's
rationalisation (hints from the answer) is not used; ReST-EM's per-prompt cap is ``max_kept_per_prompt``.

Nothing here counts budget: the backend charges the tokens it samples and prefills, the verifier its calls.

The recipe section ``rft:`` is `llm_rl.arm_configs.RftArmConfig` (importable from here too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from llm_rl.arm_configs import RftArmConfig
from llm_rl.arms.base import Arm, ArmContext, Batch
from llm_rl.config import ExperimentConfig
from relabel_rl.config import validate

__all__ = [
    "KeptCompletion",
    "RftArm",
    "RftArmConfig",
    "RftBatch",
    "collect_kept",
    "filter_completions",
    "sft_loss",
]

Feedback = Literal["outcome", "steps"]


@dataclass(frozen=True)
class KeptCompletion:
    """A completion kept for imitation: the prompt it continues and its sampled tokens (EOS included if sampled)."""

    prompt: str
    token_ids: tuple[int, ...]
    score: float


@dataclass
class RftBatch:
    """What collecting hands to the loss: the kept completions and statistics for the records."""

    kept: list[KeptCompletion]
    stats: dict[str, float] = field(default_factory=dict)


def _steps_pass(verifier: Any, text: str, example: dict) -> bool:
    checked: list[str] = []
    for step in verifier.split_steps(text):
        if verifier.check_step(list(checked), step, example) is False:
            return False
        checked.append(step)
    return True


def filter_completions(
    example: dict,
    completions: Sequence[Any],
    verifier: Any,
    cfg: RftArmConfig,
    *,
    feedback: Feedback = "outcome",
) -> tuple[list[KeptCompletion], dict[str, float]]:
    """Step 2 for one prompt: score every completion, keep those that pass (module docstring).

    Args:
      example: the task row.
      completions: its sampled `Continuation` s (``.text``, ``.token_ids``).
      verifier: scores completions (pass a contained verifier: a failure then scores 0).
      cfg: the threshold, dedupe and cap.
      feedback: ``"steps"`` also requires every step of a passing completion to pass ``check_step``.

    Returns:
      The kept completions, and counts ``passed`` (score >= threshold), ``step_rejected``, ``duplicates``,
      ``capped`` (dropped by the cap), and ``score_sum`` (of every completion's score).
    """
    if feedback not in ("outcome", "steps"):
        raise ValueError(f"feedback must be 'outcome' or 'steps', got {feedback!r}")
    kept: list[KeptCompletion] = []
    seen: set[str] = set()
    counts = {"passed": 0, "step_rejected": 0, "duplicates": 0, "capped": 0}
    scores = []
    for completion in completions:
        score = float(verifier.score(completion.text, example))
        scores.append(score)
        if score < cfg.threshold:
            continue
        counts["passed"] += 1
        if cfg.dedupe:
            if completion.text in seen:
                counts["duplicates"] += 1
                continue
            seen.add(completion.text)
        if feedback == "steps" and not _steps_pass(verifier, completion.text, example):
            counts["step_rejected"] += 1
            continue
        if cfg.max_kept_per_prompt is not None and len(kept) >= cfg.max_kept_per_prompt:
            counts["capped"] += 1
            continue
        if completion.token_ids:
            kept.append(KeptCompletion(example["prompt"], tuple(int(t) for t in completion.token_ids), score))
    return kept, {**counts, "score_sum": sum(scores)}


def collect_kept(
    examples: Sequence[dict],
    backend: Any,
    verifier: Any,
    cfg: RftArmConfig,
    *,
    max_completion_tokens: int,
    feedback: Feedback = "outcome",
    generator: torch.Generator | None = None,
) -> RftBatch:
    """Steps 1-2 for a batch of prompts: one batched sampling call, then the filter per prompt."""
    validate(cfg, prefix="rft.")
    samples = backend.sample(
        [ex["prompt"] for ex in examples],
        n=cfg.num_samples,
        max_new_tokens=max_completion_tokens,
        temperature=cfg.temperature,
        stop=None,
        generator=generator,
    )
    kept: list[KeptCompletion] = []
    totals = {"passed": 0, "step_rejected": 0, "duplicates": 0, "capped": 0, "score_sum": 0.0}
    prompts_with_kept = 0
    for example, group in zip(examples, samples):
        rows, counts = filter_completions(dict(example), group, verifier, cfg, feedback=feedback)
        kept += rows
        prompts_with_kept += bool(rows)
        for k, v in counts.items():
            totals[k] += v
    sampled = max(1, len(examples) * cfg.num_samples)
    stats = {
        "reward": totals["score_sum"] / sampled,
        "pass_fraction": totals["passed"] / sampled,  # score >= threshold
        "num_prompts": len(examples),
        "kept": len(kept),
        "kept_fraction": len(kept) / sampled,
        "prompts_with_kept": prompts_with_kept / max(1, len(examples)),
        "step_rejected": totals["step_rejected"],
        "duplicates": totals["duplicates"],
        "capped": totals["capped"],
    }
    return RftBatch(kept, stats)


def sft_loss(kept: Sequence[KeptCompletion], policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Step 3: token-mean NLL of the kept completions given their prompts (one batched forward pass).

    Returns ``(loss, metrics)``; with nothing kept a zero loss without grad.
    """
    if not kept:
        return torch.zeros(()), {"num_rows": 0, "num_tokens": 0}
    scored = policy.token_logprobs([k.prompt for k in kept], [list(k.token_ids) for k in kept])
    tokens = scored.mask.sum()
    loss = -(scored.logprobs * scored.mask).sum() / tokens
    return loss, {"loss": float(loss.detach()), "num_rows": len(kept), "num_tokens": int(tokens)}


# ---------------------------------------------------------------------------------------------------------------
# The arm: collect (steps 1-2) and loss (step 3)


class RftArm(Arm):
    """Rejection-sampling fine-tuning (module docstring). Its minibatches are cut over kept completions; SFT
    needs no sampling log-probs, so several updates per batch (ReST-EM's epochs) need nothing recorded."""

    name = "rft"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.knobs = cfg.rft
        self.feedback: Feedback = (
            cfg.task.feedback
        )  # what the arm may learn from (docs/llm_rl.md, "Information parity")

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        validate(cfg.rft, prefix="rft.")

    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        batch = collect_kept(
            examples, ctx.sampler, ctx.verifier, self.knobs, max_completion_tokens=self.cfg.task.max_completion_tokens,
            feedback=self.feedback, generator=ctx.generator,
        )  # fmt: skip
        return Batch(batch.kept, batch.stats)

    def loss(self, batch: Batch, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(batch.items, policy)
