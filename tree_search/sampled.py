"""The Sampled MuZero prior (Hubert et al. 2021) for action spaces too large to enumerate (LLM reasoning steps).

Draw K actions from a sampling distribution β, keep the distinct ones, and search over those with the prior

    prior(a) ∝ β̂(a) / β(a) * π(a)                      (Sampled MuZero, Sec. 4)

where β̂ is the empirical frequency among the K samples. When the samples come from the policy itself (β = π,
the usual case: the LLM samples K next steps) the correction cancels and the prior is the empirical frequency β̂,
which is what this returns unless ``sampling_logprobs`` says β differs from π.

Departure: the paper's PUCT then uses this prior directly, exactly like here; its improved-policy target is
``β̂/β · π_search``, which for β = π is the normalised visit distribution over the distinct samples (what
:func:`tree_search.search` returns).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["sampled_prior"]


def sampled_prior(
    samples: Sequence[Hashable],
    *,
    logprobs: Sequence[float] | np.ndarray | None = None,
    sampling_logprobs: Sequence[float] | np.ndarray | None = None,
) -> tuple[tuple, np.ndarray]:
    """Distinct actions (in first-seen order) and their Sampled-MuZero prior from K raw samples.

    Args:
      samples: the K raw sampled actions (hashable; duplicates expected).
      logprobs: optional ``[K]`` log π(sample) under the policy. Used only together with ``sampling_logprobs``;
        alone it is just checked for consistency (a repeated action must have one log-prob).
      sampling_logprobs: optional ``[K]`` log β(sample) under the distribution the samples were drawn from
        (e.g. the policy at a sampling temperature). With both given, ``prior ∝ β̂ · π / β``.

    Returns:
      ``(actions, prior)``: the distinct actions and a float64 prior summing to 1.
    """
    if len(samples) == 0:
        raise ValueError("sampled_prior(): no samples")
    index: dict[Hashable, int] = {}
    counts: list[int] = []
    first: list[int] = []
    for k, sample in enumerate(samples):
        i = index.get(sample)
        if i is None:
            index[sample] = len(counts)
            counts.append(1)
            first.append(k)
        else:
            counts[i] += 1
    actions = tuple(index)
    prior = np.asarray(counts, dtype=np.float64) / len(samples)

    def _per_sample(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (len(samples),):
            raise ValueError(f"sampled_prior(): {name} must have shape ({len(samples)},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"sampled_prior(): {name} must be finite")
        per_action = arr[first]
        for k, sample in enumerate(samples):
            if abs(arr[k] - per_action[index[sample]]) > 1e-4:
                raise ValueError(f"sampled_prior(): {name} differ for repeated sample {sample!r}")
        return per_action

    log_pi = None if logprobs is None else _per_sample("logprobs", logprobs)
    if sampling_logprobs is not None:
        if log_pi is None:
            raise ValueError("sampled_prior(): sampling_logprobs needs logprobs (log π) as well")
        log_beta = _per_sample("sampling_logprobs", sampling_logprobs)
        log_w = np.log(prior) + log_pi - log_beta
        log_w -= log_w.max()
        weights = np.exp(log_w)
        prior = weights / weights.sum()
    return actions, prior
