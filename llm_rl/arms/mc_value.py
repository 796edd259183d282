"""Arm 3: per-step Monte-Carlo values without a tree (VinePPO-style; Kazemnejad et al. 2024, "VinePPO").

Why this arm: the seed claims that *search* is what turns one outcome per completion into per-step credit. VinePPO
gets per-step credit with no search tree at all — it re-rolls the policy from each step boundary and uses the
verifier's average score as that boundary's value. If this arm matches the relabeller, per-step credit (not the
tree) is doing the work: the seed's falsification condition.

The algorithm, for each optimizer step (``optim.prompts_per_step`` prompts, via `llm_rl.loop.run_training`):

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
5. **Loss.** Per-token PPO-clip (`llm_rl.losses.pg_token_loss`, token mean over the batch) with ``A_t`` on every
   token of segment ``t`` (each completion's sampled tokens are divided among its steps exactly, and the whole
   completion is scored in one forward pass). With ``epochs=1`` the data is on-policy, old log-probs are the current ones detached,
   the ratio is exactly 1 and the loss's gradient is the plain policy gradient ``-A_t grad log p``; with
   ``epochs>1`` the old log-probs are recorded when sampling and the same batch is reused ``epochs`` times, so
   the clip (``clip_epsilon``) matters from the second pass.

Every sampled token (completions and rollouts) and every prefill is counted by the backend in the run's `Budget`;
every verifier score (each sample and each rollout) is one verifier call, counted here. One batch is expensive
(``prompts x num_samples x (1 + boundaries x num_rollouts)`` completions), so the batch that may cross the budget
limit is collected prompt by prompt and stops once the limit is reached: the run overshoots by at most one
prompt's samples and rollouts, and trains on the prompts it paid for.

Departures from VinePPO: a step is a line (the verifier's delimiter), not a paragraph/heuristic split; there is no
GAE or critic of any kind (VinePPO also drops the critic, with lambda=1 its advantages are the same
``V(s_{t+1}) - V(s_t)`` with gamma=1 and only a terminal reward); no KL penalty or entropy bonus; rollouts use the
full ``max_completion_tokens`` horizon from every boundary (one batched call needs one length limit) rather than
the remaining tokens of the sample; step count is capped at ``task.max_steps``; identical boundaries share their
rollouts; one optimizer step per batch per epoch (no minibatching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_rl.budget import Budget
from llm_rl.config import ExperimentConfig
from relabel_rl.rundir import RunDir

__all__ = [
    "CompletionRow",
    "McValueBatch",
    "SampledSteps",
    "build_rows",
    "collect_batch",
    "estimate_step_advantages",
    "gradient_sample",
    "loss_fn",
    "segment_token_ids",
    "step_segments",
    "train",
    "validate_config",
]


@dataclass(frozen=True)
class SampledSteps:
    """One sampled completion cut into steps, with its boundary values and per-step advantages.

    Attributes:
      prompt: the prompt it continues.
      segments: the completion text, one segment per step (they concatenate to the completion text).
      ends_with_eos: whether the completion's last token was EOS (it is then scored as part of the last step).
      values: ``[T+1]`` ``V(s_0) .. V(s_T)``: Monte-Carlo boundary values, ``V(s_T)`` the completion's own score.
      advantages: ``[T]`` ``A_t = V(s_{t+1}) - V(s_t)``.
    """

    prompt: str
    segments: tuple[str, ...]
    ends_with_eos: bool
    values: tuple[float, ...]
    advantages: tuple[float, ...]

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
      old_logprobs: ``[len(token_ids)]`` the sampling policy's per-token log-probs (only when ``epochs > 1``).
    """

    prompt: str
    token_ids: tuple[int, ...]
    advantages: tuple[float, ...]
    old_logprobs: torch.Tensor | None = None


@dataclass(frozen=True)
class McValueBatch:
    """What `collect` hands to `loss_fn`: the completion rows of one batch and statistics for the train record."""

    rows: tuple[CompletionRow, ...]
    samples: tuple[SampledSteps, ...]
    stats: dict[str, float] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------------------------
# Monte-Carlo values and advantages


def _score(verifier: Any, text: str, example: dict, budget: Budget | None) -> float:
    if budget is not None:
        budget.add_verifier_calls(1)
    return float(verifier.score(text, dict(example)))


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
    budget: Budget | None = None,
) -> list[list[SampledSteps]]:
    """Steps 2-4 of the module docstring for already-sampled completions.

    Args:
      examples: task rows (``prompt`` and what the verifier reads).
      completions: ``completions[i]`` the sampled `Continuation`s of ``examples[i]`` (``.text``, ``.finished``).
      backend: a `GenerationBackend` for the rollouts (it counts their tokens in its own budget).
      verifier: scores completions (pass a contained verifier: a failure scores 0).
      num_rollouts: K rollouts per distinct boundary.
      max_new_tokens / temperature: of the rollouts.
      max_steps: cap on steps per completion (see `step_segments`).
      generator: RNG of the rollouts.
      budget: verifier calls are added here (tokens are counted by the backend).

    Returns:
      ``out[i][j]``: the `SampledSteps` of completion j of example i.
    """
    if num_rollouts < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completion lists")
    # Cut every completion into segments and list the boundaries s_0 .. s_{T-1} that need rollouts.
    cut: list[list[tuple[list[str], bool, float]]] = []
    boundary_index: dict[tuple[int, str], int] = {}  # (example, completion-so-far) -> rollout slot
    boundaries: list[tuple[int, str]] = []
    for i, (example, samples) in enumerate(zip(examples, completions)):
        row = []
        for sample in samples:
            segments = step_segments(sample.text, verifier, max_steps=max_steps)
            score = _score(verifier, sample.text, example, budget)
            row.append((segments, bool(sample.finished), score))
            done = ""
            for segment in segments:
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
    boundary_value = []
    for (i, done), outs in zip(boundaries, rollouts):
        scores = [_score(verifier, done + out.text, examples[i], budget) for out in outs]
        boundary_value.append(sum(scores) / len(scores))
    # Assemble values and advantages.
    result: list[list[SampledSteps]] = []
    for i, row in enumerate(cut):
        prompt = examples[i]["prompt"]
        out_row = []
        for segments, finished, score in row:
            values, done = [], ""
            for segment in segments:
                values.append(boundary_value[boundary_index[(i, done)]])
                done += segment
            values.append(score)
            advantages = tuple(values[t + 1] - values[t] for t in range(len(segments)))
            out_row.append(SampledSteps(prompt, tuple(segments), finished, tuple(values), advantages))
        result.append(out_row)
    return result


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
        token_ids = tuple(t for ids in per_segment for t in ids)
        if token_ids:
            advantages = tuple(float(a) for ids, a in zip(per_segment, sample.advantages) for _ in ids)
            rows.append(CompletionRow(sample.prompt, token_ids, advantages))
    return rows


def loss_fn(
    items: McValueBatch, policy: Any, *, clip_epsilon: float = 0.2, temperature: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """Per-token PPO-clip loss with each step's advantage on its tokens (token mean over the batch).

    Each completion is scored in one forward pass given its prompt (not one pass per step). Log-probs come from logits / ``temperature`` (the sampling distribution, as TRL does for GRPO). On-policy rows
    (no ``old_logprobs``) use the current log-probs detached: the ratio is exactly 1 and the gradient is the plain
    policy gradient ``-A_t grad log p``.
    """
    from llm_rl.losses import pg_token_loss

    rows = items.rows
    metrics = dict(items.stats)
    if not rows:  # nothing to learn from (no completion produced a token): no gradient
        return torch.zeros(()), {**metrics, "num_rows": 0}
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
    metrics.update(
        loss=float(loss.detach()),
        num_rows=len(rows),
        num_tokens=int(mask.sum()),
        clip_fraction=float(clipped.sum() / mask.sum().clamp(min=1.0)),
    )
    return loss, metrics


# ---------------------------------------------------------------------------------------------------------------
# Collecting a batch (steps 1-4) and the arm interface


def validate_config(cfg: ExperimentConfig) -> None:
    """Early recipe check for this arm (called by ``llm-rl train``/``compare`` before heavy work)."""
    from relabel_rl.config import ConfigError

    mc = cfg.mc_value
    if mc.temperature <= 0:
        raise ConfigError(f"'mc_value.temperature' must be > 0 (sampling), got {mc.temperature}")
    if mc.clip_epsilon < 0:
        raise ConfigError(f"'mc_value.clip_epsilon' must be >= 0, got {mc.clip_epsilon}")
    if mc.epochs < 1:
        raise ConfigError(f"'mc_value.epochs' must be >= 1, got {mc.epochs}")


def _sample_and_value(
    cfg: ExperimentConfig, examples: Sequence[dict], backend: Any, verifier: Any, generator: Any, budget: Any
) -> tuple[list[SampledSteps], list[Any]]:
    """Steps 1-4 for ``examples``: one batched sampling call, one batched rollout call."""
    mc = cfg.mc_value
    prompts = [ex["prompt"] for ex in examples]
    completions = backend.sample(
        prompts, n=mc.num_samples, max_new_tokens=cfg.task.max_completion_tokens, temperature=mc.temperature,
        stop=None, generator=generator,
    )  # fmt: skip
    valued = estimate_step_advantages(
        examples, completions, backend, verifier, num_rollouts=mc.num_rollouts,
        max_new_tokens=cfg.task.max_completion_tokens, temperature=mc.temperature, max_steps=cfg.task.max_steps,
        generator=generator, budget=budget,
    )  # fmt: skip
    return [s for row in valued for s in row], [c for row in completions for c in row]


def collect_batch(
    cfg: ExperimentConfig,
    examples: Sequence[dict],
    policy: Any,
    backend: Any,
    verifier: Any,
    *,
    generator: torch.Generator | None,
    budget: Budget | None,
    one_prompt_at_a_time: bool = False,
) -> McValueBatch:
    """Sample ``num_samples`` completions per example, value every step boundary, and build the training rows.

    Tokens are counted by ``backend`` (its own budget); verifier calls are added to ``budget``. With
    ``one_prompt_at_a_time`` (the last batch of a run) the prompts are processed one by one and collection stops
    as soon as ``budget`` reaches ``cfg.budget``'s limit, so the run overshoots by at most one prompt's work.
    """
    mc = cfg.mc_value
    if one_prompt_at_a_time and budget is not None:
        samples, conts = [], []
        for example in examples:
            s, c = _sample_and_value(cfg, [example], backend, verifier, generator, budget)
            samples += s
            conts += c
            if budget.exhausted(cfg.budget):
                break
    else:
        samples, conts = _sample_and_value(cfg, examples, backend, verifier, generator, budget)
    rows = build_rows(samples, conts, policy.tokenizer, eos_token_id=policy.eos_token_id)
    if mc.epochs > 1 and rows:  # off-policy from the second epoch on: keep the sampling policy's log-probs
        with torch.no_grad():
            old = policy.token_logprobs(
                [r.prompt for r in rows], [list(r.token_ids) for r in rows], temperature=mc.temperature
            ).logprobs
        rows = [
            CompletionRow(r.prompt, r.token_ids, r.advantages, old[i, : len(r.token_ids)].detach().cpu())
            for i, r in enumerate(rows)
        ]
    advantages = [a for s in samples for a in s.advantages]
    stats = {
        "reward": sum(s.score for s in samples) / max(1, len(samples)),
        "mean_steps": sum(len(s.segments) for s in samples) / max(1, len(samples)),
        "mean_abs_advantage": sum(abs(a) for a in advantages) / max(1, len(advantages)),
        "frac_zero_advantage": sum(a == 0 for a in advantages) / max(1, len(advantages)),
        "prompt_value": sum(s.values[0] for s in samples) / max(1, len(samples)),
        "num_prompts": len(samples) // mc.num_samples,
    }
    return McValueBatch(tuple(rows), tuple(samples), stats)


def gradient_sample(
    cfg: ExperimentConfig, policy: Any, verifier: Any, example: dict, *, generator: torch.Generator | None
) -> torch.Tensor:
    """One stochastic estimate of this arm's loss for ONE prompt (``num_samples`` completions, their boundary
    values from ``num_rollouts`` rollouts each, per-step advantages, the on-policy token loss). Nothing is counted
    in any budget; pass a contained verifier (a failure then scores 0)."""
    from llm_rl.generation import HFBackend

    batch = collect_batch(
        cfg,
        [dict(example)],
        policy,
        HFBackend(policy, budget=None),
        verifier,
        generator=generator,
        budget=None,
    )
    on_policy = McValueBatch(
        tuple(CompletionRow(r.prompt, r.token_ids, r.advantages) for r in batch.rows), batch.samples
    )
    loss, _ = loss_fn(
        on_policy, policy, clip_epsilon=cfg.mc_value.clip_epsilon, temperature=cfg.mc_value.temperature
    )
    return loss


class _EpochReuse:
    """`collect` for `llm_rl.loop.run_training` that serves each collected batch ``epochs`` times.

    The loop takes one optimizer step per global batch; PPO-style ``epochs`` means several steps on one batch, so
    the batch is kept and handed back (spending nothing; the loop's fresh prompts are ignored on reuse) until it
    has been trained on ``epochs`` times. With ``epochs=1`` every call samples a fresh batch. A step's batch comes
    in ``optim.prompt_chunks`` chunks, of which this process collects ``chunks / processes`` in order, one call
    each; call ``n`` of the run is chunk slot ``n mod (chunks / processes)``, and each slot keeps its own batch.
    The kept batches are not checkpointed: a run resumed mid-reuse (always at a step boundary, slot 0) samples
    new ones.

    A batch that may cross the budget limit is collected one prompt at a time, stopping at the limit (see
    `collect_batch`): the first batch, and any batch when what is left is under twice the average cost of the
    batches so far. The decision reads only the budget counters (checkpointed), so a resumed run decides as the
    uninterrupted one did.
    """

    def __init__(
        self, cfg: ExperimentConfig, verifier: Any, budget: Budget, *, chunks_per_process: int
    ) -> None:
        self.cfg, self.verifier, self.budget = cfg, verifier, budget
        self.slots: list[tuple[McValueBatch, int] | None] = [
            None
        ] * chunks_per_process  # (batch, times served)
        self.calls = 0

    def near_limit(self) -> bool:
        """Whether the next batch may cross the budget limit (collect it prompt by prompt)."""
        axis, limit = self.cfg.budget.axis, self.cfg.budget.limit
        if axis == "optimizer_steps":  # collecting spends no optimizer steps
            return False
        spent = self.budget.value(axis)
        batches = math.ceil(self.budget.optimizer_steps / self.cfg.mc_value.epochs)
        return batches == 0 or limit - spent < 2.0 * spent / batches

    def __call__(
        self, examples: list[dict], policy: Any, backend: Any, generator: torch.Generator
    ) -> McValueBatch:
        slot = self.calls % len(self.slots)
        self.calls += 1
        kept = self.slots[slot]
        if kept is None or kept[1] >= self.cfg.mc_value.epochs:
            fresh = collect_batch(
                self.cfg, examples, policy, backend, self.verifier, generator=generator, budget=self.budget,
                one_prompt_at_a_time=self.near_limit(),
            )  # fmt: skip
            kept = (fresh, 0)
        batch, uses = kept[0], kept[1] + 1
        self.slots[slot] = (batch, uses)
        return McValueBatch(batch.rows, batch.samples, {**batch.stats, "epoch": float(uses)})


def train(cfg: ExperimentConfig, run: RunDir, *, init_model: str) -> dict:
    """Train with per-step Monte-Carlo advantages from ``init_model`` until the budget is spent (resumable);
    the loop (`llm_rl.loop.run_training`) logs train/eval records and saves ``run.path / "final"``."""
    from functools import partial

    from llm_rl.distributed import Layout, resolve_chunks
    from llm_rl.loop import load_task, run_training
    from llm_rl.models import load_policy
    from relabel_rl.rundir import seed_everything

    validate_config(cfg)
    task = load_task(cfg)
    seed_everything(cfg.seed)  # the fresh value head (unused by this arm, but saved) is seeded too
    policy = load_policy(
        init_model, lora=cfg.model.lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )
    budget = Budget()
    world = Layout.current().world
    chunks = resolve_chunks(cfg.optim.prompts_per_step, cfg.optim.prompt_chunks, world)
    loss = partial(loss_fn, clip_epsilon=cfg.mc_value.clip_epsilon, temperature=cfg.mc_value.temperature)
    return run_training(
        cfg,
        run,
        policy,
        collect=_EpochReuse(cfg, task.verifier, budget, chunks_per_process=chunks // world),
        loss_fn=loss,
        budget=budget,
        task=task,
    )
