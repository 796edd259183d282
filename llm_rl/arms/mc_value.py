"""Arm 3: per-step Monte-Carlo values without a tree (VinePPO-style; Kazemnejad et al. 2024, "VinePPO").

Why this arm: the seed claims that *search* is what turns one outcome per completion into per-step credit. VinePPO
gets per-step credit with no search tree at all — it re-rolls the policy from each step boundary and uses the
verifier's average score as that boundary's value. If this arm matches the relabeller, per-step credit (not the
tree) is doing the work: the seed's falsification condition.

The algorithm, for each batch of ``optim.prompts_per_step`` prompts (``collect``, then ``loss`` per update):

1. **Sample.** ``num_samples`` whole completions per prompt: one batched ``backend.sample(prompts, n=num_samples,
   stop=None)`` at ``temperature``, up to ``task.max_completion_tokens`` tokens.
2. **Split into steps.** ``verifier.split_steps`` gives the reasoning steps (lines). Each step owns a *segment* of
   the completion text: from the end of the previous segment to the end of its delimiter (the last segment runs to
   the end of the text, plus the EOS token when one was sampled), so the segments concatenate to exactly what was
   sampled. A completion with more than ``task.max_steps`` steps keeps the extra ones in its last segment.
3. **Value every boundary.** Boundary ``s_t`` is ``prompt + segments[:t]`` (``s_0`` is the prompt). For every
   distinct boundary ``t < T`` of every sample, ``V(s_t)`` = the mean verifier score of ``num_rollouts`` (K) fresh
   completions of ``s_t`` — all boundaries of all samples in ONE batched ``backend.sample(prefixes, n=K)``. Equal
   prefixes (the prompt, shared first steps) are rolled out once. ``V(s_T)`` is the sample's own score.
4. **Per-step advantages.** ``A_t = V(s_{t+1}) - V(s_t)``: the step's Monte-Carlo estimate of how much it raised
   the chance of a correct answer.

   Under ``task.feedback: steps`` (step checks for every arm) each sample's steps are checked in order with
   ``verifier.check_step`` up to the first one it rejects, and the episode ends there, as in an environment that
   terminates at a wrong step with reward 0 (this arm's natural use of a step check: it replaces the Monte-Carlo
   estimate the arm would otherwise pay rollouts for): the boundary after the rejected step has value 0 and no
   rollouts are spent on it or on any later boundary; the sample is not scored (its outcome is 0); its training
   row ends with the rejected step's tokens (advantage ``0 - V(s_t)``). Boundary values before it are still
   Monte-Carlo estimates of the chance of a correct final answer (the rollouts themselves are scored by outcome
   only, as in VinePPO). Under ``outcome`` (the default) ``check_step`` is never called.
5. **Loss.** Per-token PPO-clip (`llm_rl.arms.losses.pg_token_loss`, token mean over the batch) with ``A_t`` on every
   token of segment ``t`` (each completion's sampled tokens are divided among its steps exactly, and the whole
   completion is scored in one forward pass). With one update per batch (``optim.epochs = optim.minibatches =
   1``) the data is on-policy, old log-probs are the current ones detached, the ratio is exactly 1 and the loss's
   gradient is the plain policy gradient ``-A_t grad log p``; with more (VinePPO's PPO epochs x minibatches) the
   old log-probs are recorded when sampling and the harness trains on the batch's completions several times, so
   the clip (``clip_epsilon``) matters from the second update.

Every sampled token (completions and rollouts) and every prefill is charged by the metered sampler, every score
(each sample and each rollout) by the metered verifier. One batch is expensive (``prompts x num_samples x (1 +
boundaries x num_rollouts)`` completions), so a batch that may cross the budget limit
(``ctx.batch_may_cross_limit()``) is collected prompt by prompt and stops once the budget is spent: the run
overshoots by at most one prompt's samples and rollouts, and trains on the prompts it paid for.

Departures from VinePPO: a step is a line (the verifier's delimiter), not a paragraph/heuristic split; there is no
GAE or critic of any kind (VinePPO also drops the critic, with lambda=1 its advantages are the same
``V(s_{t+1}) - V(s_t)`` with gamma=1 and only a terminal reward); no KL penalty or entropy bonus; rollouts use the
full ``max_completion_tokens`` horizon from every boundary (one batched call needs one length limit) rather than
the remaining tokens of the sample; step count is capped at ``task.max_steps``; identical boundaries share their
rollouts; minibatches are cut over completions (a completion's steps stay together).

The recipe section ``mc_value:`` is `llm_rl.arm_configs.McValueArmConfig` (importable from here too).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm_rl.arm_configs import McValueArmConfig
from llm_rl.arms.base import Arm, ArmContext, Batch
from llm_rl.arms.losses import pg_token_loss
from llm_rl.config import ExperimentConfig
from relabel_rl.config import ConfigError

__all__ = [
    "CompletionRow",
    "McValueArm",
    "McValueArmConfig",
    "SampledSteps",
    "build_rows",
    "estimate_step_advantages",
    "first_rejected_segment",
    "pg_loss",
    "segment_token_ids",
    "step_segments",
]


@dataclass(frozen=True)
class SampledSteps:
    """One sampled completion cut into steps, with its boundary values and per-step advantages.

    Attributes:
      prompt: the prompt it continues.
      segments: the completion text, one segment per step (they concatenate to the completion text).
      ends_with_eos: whether the completion's last token was EOS (it is then scored as part of the last step).
      values: ``[T'+1]`` ``V(s_0) .. V(s_T')``: Monte-Carlo boundary values, ``V(s_T')`` the completion's own
        score (``T' = T``), or 0 when the episode ended at a rejected step (``T' = rejected_step + 1``).
      advantages: ``[T']`` ``A_t = V(s_{t+1}) - V(s_t)``: one per step of the episode.
      rejected_step: the index of the segment whose step ``check_step`` rejected (the episode ends there), or
        None (no step rejected, or no step checked: ``task.feedback: outcome``).
    """

    prompt: str
    segments: tuple[str, ...]
    ends_with_eos: bool
    values: tuple[float, ...]
    advantages: tuple[float, ...]
    rejected_step: int | None = None

    @property
    def score(self) -> float:
        return self.values[-1]


@dataclass(frozen=True)
class CompletionRow:
    """One training row: a sampled completion's tokens, each carrying the advantage of the step it belongs to.

    Attributes:
      prompt: the prompt (the completion is scored given it, in one forward pass).
      token_ids: the completion's sampled tokens (EOS included when one was sampled).
      advantages: ``[len(token_ids)]`` the advantage ``A_t`` of the step each token belongs to.
      old_logprobs: ``[len(token_ids)]`` the sampling policy's per-token log-probs (only when the batch is
        trained on more than once).
    """

    prompt: str
    token_ids: tuple[int, ...]
    advantages: tuple[float, ...]
    old_logprobs: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------
# Steps


def step_segments(completion: str, verifier: Any, *, max_steps: int) -> list[str]:
    """Cut ``completion`` into per-step segments that concatenate back to it exactly.

    ``verifier.split_steps`` defines the steps; a segment runs from the end of the previous one through its step
    and the delimiter that follows it (text between steps — blank lines — goes with the next step). The last
    segment takes whatever remains (and every step past ``max_steps``). A completion with no steps is one segment.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    delimiter = verifier.step_delimiter
    steps = verifier.split_steps(completion)
    cuts: list[int] = []
    cursor = 0
    for step in steps[: max_steps - 1]:
        at = completion.find(step, cursor)
        if at < 0:  # a verifier whose split_steps rewrites text: fall back to one segment
            return [completion]
        end = at + len(step)
        if completion.startswith(delimiter, end):
            end += len(delimiter)
        cuts.append(end)
        cursor = end
    segments = []
    start = 0
    for end in cuts:
        segments.append(completion[start:end])
        start = end
    tail = completion[start:]
    if tail or not segments:
        segments.append(tail)
    return segments


def first_rejected_segment(segments: Sequence[str], verifier: Any, example: dict) -> int | None:
    """The index of the first segment holding a step ``verifier.check_step`` rejects (its steps checked in order,
    each against the steps before it; one check per step, none after the first rejection), or None."""
    previous: list[str] = []
    for index, segment in enumerate(segments):
        for step in verifier.split_steps(segment):
            if verifier.check_step(list(previous), step, example) is False:
                return index
            previous.append(step)
    return None


def _episode(
    prompt: str, segments: list[str], finished: bool, score: float, rejected: int | None, value_at: dict
) -> SampledSteps:
    """A sample's boundary values ``V(s_0) .. V(s_T')`` (``value_at[completion so far]``, then its outcome) and
    advantages ``A_t = V(s_{t+1}) - V(s_t)`` over the steps of its episode."""
    values, done = [], ""
    for segment in segments[: None if rejected is None else rejected + 1]:
        values.append(value_at[done])
        done += segment
    values.append(score)
    advantages = tuple(b - a for a, b in itertools.pairwise(values))
    return SampledSteps(prompt, tuple(segments), finished, tuple(values), advantages, rejected)


def _cut(
    text: str, example: dict, verifier: Any, max_steps: int, check_steps: bool
) -> tuple[list[str], float, int | None]:
    """A sample's segments, its outcome, and the segment its episode ended at (``check_steps``: the first one
    holding a rejected step; the outcome of such an episode is 0, unscored)."""
    segments = step_segments(text, verifier, max_steps=max_steps)
    rejected = first_rejected_segment(segments, verifier, example) if check_steps else None
    score = float(verifier.score(text, example)) if rejected is None else 0.0
    return segments, score, rejected


# ---------------------------------------------------------------------------------------------------------------
# Monte-Carlo values and advantages


def estimate_step_advantages(
    examples: Sequence[dict],
    completions: Sequence[Sequence[Any]],
    backend: Any,
    verifier: Any,
    *,
    num_rollouts: int,
    max_new_tokens: int,
    temperature: float,
    max_steps: int,
    generator: torch.Generator | None = None,
    check_steps: bool = False,
) -> list[list[SampledSteps]]:
    """Steps 2-4 of the module docstring for already-sampled completions.

    Args:
      examples: task rows (``prompt`` and what the verifier reads).
      completions: ``completions[i]`` the sampled `Continuation`s of ``examples[i]`` (``.text``, ``.finished``).
      backend: a `GenerationBackend` for the rollouts.
      verifier: scores completions (a contained verifier: a failure scores 0).
      num_rollouts: K rollouts per distinct boundary.
      max_new_tokens / temperature: of the rollouts.
      max_steps: cap on steps per completion (see `step_segments`).
      generator: RNG of the rollouts.
      check_steps: end each episode at its first step ``check_step`` rejects (``task.feedback: steps``).

    Returns:
      ``out[i][j]``: the `SampledSteps` of completion j of example i.
    """
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completion lists")
    # Cut every completion into segments and list the boundaries s_0 .. s_{T-1} that need rollouts.
    cut: list[list[tuple[list[str], bool, float, int | None]]] = []
    boundary_index: dict[tuple[int, str], int] = {}  # (example, completion-so-far) -> rollout slot
    boundaries: list[tuple[int, str]] = []
    for i, (example, samples) in enumerate(zip(examples, completions)):
        row = []
        for sample in samples:
            segments, score, rejected = _cut(sample.text, dict(example), verifier, max_steps, check_steps)
            row.append((segments, bool(sample.finished), score, rejected))
            done = ""
            for segment in segments[: None if rejected is None else rejected + 1]:
                key = (i, done)
                if key not in boundary_index:
                    boundary_index[key] = len(boundaries)
                    boundaries.append(key)
                done += segment
        cut.append(row)
    # One batched call rolls out every distinct boundary K times.
    prefixes = [examples[i]["prompt"] + done for i, done in boundaries]
    rollouts = (
        backend.sample(
            prefixes, n=num_rollouts, max_new_tokens=max_new_tokens, temperature=temperature, stop=None,
            generator=generator,
        )
        if prefixes
        else []
    )  # fmt: skip
    value_at: list[dict[str, float]] = [{} for _ in examples]  # per example: completion so far -> V
    for (i, done), outs in zip(boundaries, rollouts):
        scores = [float(verifier.score(done + out.text, dict(examples[i]))) for out in outs]
        value_at[i][done] = sum(scores) / len(scores)
    return [[_episode(examples[i]["prompt"], *c, value_at[i]) for c in row] for i, row in enumerate(cut)]


# ---------------------------------------------------------------------------------------------------------------
# Training rows and the loss


def segment_token_ids(
    token_ids: Sequence[int], segments: Sequence[str], tokenizer: Any, *, eos_token_id: int
) -> list[list[int]]:
    """The sampled ``token_ids`` of a completion divided among its text ``segments`` (exact, no re-tokenising).

    Token ``k`` goes to the segment holding the last character of ``decode(token_ids[:k+1])``; tokens that decode
    to nothing (EOS) go with the segment before them. If decoding does not reproduce the segments' text (a
    tokenizer whose pieces are not additive), each segment is re-tokenised instead, plus the EOS if one was
    sampled.
    """
    ids = list(token_ids)
    cuts, total = [], 0
    for segment in segments:
        total += len(segment)
        cuts.append(total)
    text_ids = [t for t in ids if t != eos_token_id]
    decoded_lengths = [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]
    if not ids or (decoded_lengths[-1] != total and text_ids):
        out = [list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else [] for s in segments]
        if ids and ids[-1] == eos_token_id:
            out[-1].append(eos_token_id)
        return out
    out = [[] for _ in segments]
    seg = 0
    for token, end in zip(ids, decoded_lengths):
        while seg < len(cuts) - 1 and end > cuts[seg]:
            seg += 1
        out[seg].append(token)
    return out


def build_rows(
    samples: Sequence[SampledSteps], completions: Sequence[Any], tokenizer: Any, *, eos_token_id: int
) -> list[CompletionRow]:
    """One `CompletionRow` per completion with at least one token (``completions[j]`` belongs to ``samples[j]``):
    its sampled tokens, each with the advantage of its step (`segment_token_ids` assigns tokens to steps)."""
    rows = []
    for sample, completion in zip(samples, completions):
        per_segment = segment_token_ids(
            completion.token_ids, sample.segments, tokenizer, eos_token_id=eos_token_id
        )
        per_segment = per_segment[: len(sample.advantages)]  # an episode ended at a rejected step: up to it
        token_ids = tuple(t for ids in per_segment for t in ids)
        if token_ids:
            advantages = tuple(float(a) for ids, a in zip(per_segment, sample.advantages) for _ in ids)
            rows.append(CompletionRow(sample.prompt, token_ids, advantages))
    return rows


def pg_loss(
    rows: Sequence[CompletionRow], policy: Any, *, clip_epsilon: float = 0.2, temperature: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """Per-token PPO-clip loss with each step's advantage on its tokens (token mean over the batch).

    Each completion is scored in one forward pass given its prompt (not one pass per step). Log-probs come from logits / ``temperature`` (the sampling distribution, as TRL does for GRPO). On-policy rows
    (no ``old_logprobs``) use the current log-probs detached: the ratio is exactly 1 and the gradient is the plain
    policy gradient ``-A_t grad log p``.
    """
    if not rows:  # nothing to learn from (no completion produced a token): no gradient
        return torch.zeros(()), {"num_rows": 0}
    scored = policy.token_logprobs(
        [r.prompt for r in rows], [list(r.token_ids) for r in rows], temperature=temperature
    )
    logprobs, mask = scored.logprobs, scored.mask
    old = logprobs.detach().clone()
    advantages = torch.zeros_like(logprobs)
    for i, r in enumerate(rows):
        advantages[i, : len(r.token_ids)] = torch.tensor(r.advantages, dtype=logprobs.dtype)
        if r.old_logprobs is not None:
            old[i, : len(r.token_ids)] = r.old_logprobs.to(old)
    loss = pg_token_loss(logprobs, old, advantages, mask, clip_epsilon=clip_epsilon, reduction="token_mean")
    ratio = torch.exp((logprobs - old) * mask)
    clipped = ((ratio - 1.0).abs() > clip_epsilon).to(mask.dtype) * mask
    return loss, {
        "loss": float(loss.detach()),
        "num_rows": len(rows),
        "num_tokens": int(mask.sum()),
        "clip_fraction": float(clipped.sum() / mask.sum().clamp(min=1.0)),
    }


# ---------------------------------------------------------------------------------------------------------------
# The arm: collect (steps 1-4) and loss (step 5)


class McValueArm(Arm):
    """Per-step Monte-Carlo values without a tree (module docstring)."""

    name = "mc_value"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.knobs = cfg.mc_value

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        mc = cfg.mc_value
        if mc.temperature <= 0:
            raise ConfigError(f"'mc_value.temperature' must be > 0 (sampling), got {mc.temperature}")
        if mc.clip_epsilon < 0:
            raise ConfigError(f"'mc_value.clip_epsilon' must be >= 0, got {mc.clip_epsilon}")

    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        if ctx.batch_may_cross_limit():  # prompt by prompt, stopping once the budget is spent
            samples, completions = [], []
            for example in examples:
                s, c = self._sample_and_value([example], ctx)
                samples, completions = samples + s, completions + c
                if ctx.out_of_budget():
                    break
        else:
            samples, completions = self._sample_and_value(examples, ctx)
        policy = ctx.policy
        rows = build_rows(samples, completions, policy.tokenizer, eos_token_id=policy.eos_token_id)
        if (
            ctx.updates_per_batch > 1 and rows
        ):  # trained on after the policy moves: keep the sampling log-probs
            old = policy.token_logprobs(
                [r.prompt for r in rows],
                [list(r.token_ids) for r in rows],
                temperature=self.knobs.temperature,
            ).logprobs
            rows = [
                CompletionRow(r.prompt, r.token_ids, r.advantages, old[i, : len(r.token_ids)].detach().cpu())
                for i, r in enumerate(rows)
            ]
        return Batch(tuple(rows), _batch_stats(samples, self.knobs.num_samples))

    def loss(self, batch: Batch, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return pg_loss(
            batch.items, policy, clip_epsilon=self.knobs.clip_epsilon, temperature=self.knobs.temperature
        )

    def _sample_and_value(
        self, examples: Sequence[dict], ctx: ArmContext
    ) -> tuple[list[SampledSteps], list[Any]]:
        """Steps 1-4 for ``examples``: one batched sampling call, one batched rollout call."""
        task = self.cfg.task
        completions = ctx.sampler.sample(
            [ex["prompt"] for ex in examples], n=self.knobs.num_samples, max_new_tokens=task.max_completion_tokens,
            temperature=self.knobs.temperature, stop=None, generator=ctx.generator,
        )  # fmt: skip
        valued = estimate_step_advantages(
            examples, completions, ctx.sampler, ctx.verifier, num_rollouts=self.knobs.num_rollouts,
            max_new_tokens=task.max_completion_tokens, temperature=self.knobs.temperature, max_steps=task.max_steps,
            generator=ctx.generator, check_steps=task.feedback == "steps",
        )  # fmt: skip
        return [s for row in valued for s in row], [c for row in completions for c in row]


def _batch_stats(samples: Sequence[SampledSteps], num_samples: int) -> dict[str, float]:
    advantages = [a for s in samples for a in s.advantages]
    n, m = max(1, len(samples)), max(1, len(advantages))
    return {
        "reward": sum(s.score for s in samples) / n,
        "mean_steps": sum(len(s.segments) for s in samples) / n,
        "mean_abs_advantage": sum(abs(a) for a in advantages) / m,
        "frac_zero_advantage": sum(a == 0 for a in advantages) / m,
        "prompt_value": sum(s.values[0] for s in samples) / n,
        "num_prompts": len(samples) // num_samples,
        "rejected_episode_fraction": sum(s.rejected_step is not None for s in samples) / n,
    }
