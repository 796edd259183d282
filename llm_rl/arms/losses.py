"""Pure loss functions shared by the hand-written arms (relabeller, per-step MC values), tested by hand-computed
numbers in ``tests/test_losses.py``.

* :func:`candidate_cross_entropy` — the relabeller's policy loss, in two forms. AlphaZero trains the policy head
  with ``-sum_a pi_search(a) log p(a)`` over *all* legal moves. An LLM's "moves" are reasoning steps, an unbounded
  space: the search only ever sees the distinct steps among K samples, with the Sampled-MuZero prior (their
  empirical frequency ``beta_hat``).

  - ``normalise=False`` (Sampled MuZero, Hubert et al. 2021): ``-sum_a target(a) log p(a)`` with ``log p(a)`` the
    candidate's full sequence log-probability. Unbiased: if the search adds nothing (``target = beta_hat``), its
    expected gradient over the K samples is ``-E_{a~p}[grad log p(a)] = 0``; whatever the search adds (visits
    moved to better steps, pruned steps at 0) is what moves the policy. Decisions with a single distinct
    candidate must then be kept: they are part of that expectation.
  - ``normalise=True``: the policy renormalised over the candidate set, ``p_C(a) = p(a) / sum_{b in C} p(b)``.
    Its gradient ``sum_a (p_C(a) - target(a)) grad log p(a)`` only moves probability between the candidates and
    pushes a zero-target (pruned) candidate down explicitly, but it equals the first form plus
    ``log sum_{b in C} p(b)``: minimising it also *lowers the total probability of the policy's own samples*,
    and with ``target = beta_hat`` its expected gradient is not 0 — it flattens the policy (e.g. p = (0.9, 0.1),
    K = 2: the samples {A, B} give target (1/2, 1/2) against p_C = (0.9, 0.1), and {A, A} gives no signal).
    Kept as an option for comparison.
  - ``baseline=beta_hat`` (the ``advantage`` form, the relabeller's default; this project's addition): ``-sum_a
    (target(a) - beta_hat(a)) log p(a)``. The Sampled-MuZero loss is the sum of a *self-imitation* term ``-sum_a
    beta_hat(a) log p(a)`` (maximum likelihood of the policy's own K samples: zero gradient in expectation, but
    not per batch) and what the search added. Subtracting the first keeps the expected gradient and removes its
    noise: per sample it is the policy gradient with advantage ``target(a) / beta_hat(a) - 1``, and a search that
    adds nothing gives exactly zero gradient, not zero on average. Why it matters: under Adam a zero-mean
    gradient still moves every parameter ~learning rate per step, and the self-imitation noise alone (target :=
    beta_hat) took the tiny preset at L=5 from 0.20 to 0.04-0.08 pass@1 in 12 steps
    (docs/research/outcome_relabel.md). The weights sum to 0, so ``normalise`` makes no difference in this form.
* :func:`value_loss` — mean squared error of the value head to its target (AlphaZero's ``(z - v)^2``).
* :func:`pg_token_loss` — the PPO clipped surrogate per token with per-token advantages (VinePPO's per-step MC
  advantages broadcast over a step's tokens), averaged over tokens or over sequences.

These are written by hand because they are a few lines of tensor math over quantities no library computes for us
(sequence log-probs of sampled steps, search targets); TRL's losses are bound to its trainers.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["candidate_cross_entropy", "pg_token_loss", "value_loss"]


def candidate_cross_entropy(
    candidate_logprobs: torch.Tensor,
    target: torch.Tensor,
    *,
    normalise: bool = True,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the policy to a search target over a set of sampled candidates (module docstring).

    ``normalise=True``: ``-sum_a target[a] * log_softmax(candidate_logprobs)[a]`` (the policy renormalised over
    the candidates). ``normalise=False``: ``-sum_a target[a] * candidate_logprobs[a]`` (Sampled MuZero). With
    ``baseline``: ``-sum_a (target[a] - baseline[a]) * candidate_logprobs[a]`` (either ``normalise``: the weights
    sum to 0, so renormalising cancels).

    Args:
      candidate_logprobs: ``[A]`` the policy's sequence log-probabilities of the A candidates (with grad).
      target: ``[A]`` non-negative target probabilities summing to 1 (the search's improved policy).
      normalise: renormalise the policy over the candidate set.
      baseline: ``[A]`` a distribution to subtract from the target (the candidates' sampling frequency
        ``beta_hat``), or None.

    Returns:
      A scalar tensor (with ``normalise`` or a baseline, 0 with zero gradient when ``A == 1``).
    """
    if candidate_logprobs.ndim != 1:
        raise ValueError(
            f"candidate_cross_entropy(): candidate_logprobs must be 1-D [A], got {tuple(candidate_logprobs.shape)}"
        )
    target = torch.as_tensor(target, dtype=candidate_logprobs.dtype, device=candidate_logprobs.device)
    if target.shape != candidate_logprobs.shape:
        raise ValueError(
            f"candidate_cross_entropy(): target shape {tuple(target.shape)} != candidate_logprobs shape "
            f"{tuple(candidate_logprobs.shape)}"
        )
    if candidate_logprobs.numel() == 0:
        raise ValueError("candidate_cross_entropy(): empty candidate set")
    if bool((target < 0).any()) or abs(float(target.sum()) - 1.0) > 1e-4:
        raise ValueError(f"candidate_cross_entropy(): target must be a distribution, got {target.tolist()}")
    if baseline is not None:
        baseline = torch.as_tensor(baseline, dtype=candidate_logprobs.dtype, device=candidate_logprobs.device)
        if (
            baseline.shape != target.shape
            or bool((baseline < 0).any())
            or abs(float(baseline.sum()) - 1) > 1e-4
        ):
            raise ValueError(
                f"candidate_cross_entropy(): baseline must be a distribution shaped like target, got {baseline}"
            )
        weights = target - baseline
        # a zero weight contributes nothing even where log p is -inf
        return -(torch.where(weights != 0, weights * candidate_logprobs, torch.zeros_like(weights))).sum()
    log_p = torch.log_softmax(candidate_logprobs, dim=0) if normalise else candidate_logprobs
    # 0 * log p is 0 even where log p is -inf (a candidate the model cannot produce any more).
    return -(torch.where(target > 0, target * log_p, torch.zeros_like(log_p))).sum()


def value_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``mean((predicted - target)^2)`` over ``[N]`` value predictions."""
    target = torch.as_tensor(target, dtype=predicted.dtype, device=predicted.device)
    if predicted.shape != target.shape:
        raise ValueError(
            f"value_loss(): predicted shape {tuple(predicted.shape)} != target shape {tuple(target.shape)}"
        )
    if predicted.numel() == 0:
        raise ValueError("value_loss(): no predictions")
    return torch.mean((predicted - target) ** 2)


def pg_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_epsilon: float | None = 0.2,
    reduction: Literal["token_mean", "sequence_mean"] = "token_mean",
) -> torch.Tensor:
    """The PPO clipped policy-gradient surrogate with per-token advantages.

    ``ratio = exp(logprobs - old_logprobs)``; per token ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``
    (``-ratio * A`` when ``clip_epsilon`` is None). On-policy (``old_logprobs = logprobs.detach()``) its gradient
    is the REINFORCE estimate ``-A * grad log p``.

    Args:
      logprobs: ``[B, T]`` per-token log-probs of the sampled tokens under the current policy (with grad).
      old_logprobs: ``[B, T]`` the same under the policy that sampled them (no grad).
      advantages: ``[B, T]`` per-token advantages, or ``[B]`` one per sequence (broadcast over its tokens).
      mask: ``[B, T]`` 1 for completion tokens, 0 for padding.
      clip_epsilon: PPO's clip range; None for no clipping.
      reduction: ``token_mean`` averages over all unmasked tokens of the batch (DAPO); ``sequence_mean`` averages
        within each sequence, then over sequences (the original GRPO/PPO-per-sample form).

    Returns:
      A scalar tensor.
    """
    if logprobs.ndim != 2:
        raise ValueError(f"pg_token_loss(): logprobs must be [B, T], got {tuple(logprobs.shape)}")
    old_logprobs = torch.as_tensor(old_logprobs, dtype=logprobs.dtype, device=logprobs.device).detach()
    advantages = torch.as_tensor(advantages, dtype=logprobs.dtype, device=logprobs.device)
    mask = torch.as_tensor(mask, device=logprobs.device).to(logprobs.dtype)
    if advantages.ndim == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("mask", mask)):
        if t.shape != logprobs.shape:
            raise ValueError(
                f"pg_token_loss(): {name} shape {tuple(t.shape)} != logprobs shape {tuple(logprobs.shape)}"
            )
    if float(mask.sum()) <= 0:
        raise ValueError("pg_token_loss(): the mask selects no tokens")
    # Masked positions may hold padding garbage: zero the log-ratio there before exponentiating.
    log_ratio = torch.where(mask > 0, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    surrogate = ratio * advantages
    if clip_epsilon is not None:
        if clip_epsilon < 0:
            raise ValueError(f"pg_token_loss(): clip_epsilon must be >= 0, got {clip_epsilon}")
        clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * advantages
        surrogate = torch.minimum(surrogate, clipped)
    per_token = -surrogate * mask
    if reduction == "token_mean":
        return per_token.sum() / mask.sum()
    if reduction == "sequence_mean":
        lengths = mask.sum(dim=1)
        keep = lengths > 0
        return (per_token.sum(dim=1)[keep] / lengths[keep]).mean()
    raise ValueError(f"pg_token_loss(): unknown reduction {reduction!r}; choose token_mean or sequence_mean")
