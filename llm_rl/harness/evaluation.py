"""Held-out evaluation: greedy pass@1, sampled pass@k, mean score — never charged to a training budget.

Every arm reports the same numbers computed the same way, so the comparison is apples to apples:

* ``pass@1``: the fraction of examples whose *greedy* completion the verifier scores as a success (deterministic);
* ``pass@k``: the unbiased estimator of Chen et al. (2021) from ``k`` samples at ``temperature`` (with exactly
  ``k`` samples this is the fraction of examples with at least one success);
* ``mean_score``: the mean verifier score of those samples (the expected reward the RL arms maximise);
* ``greedy_mean_score``, ``sample_pass@1`` (mean success of a single sample) and ``n`` (examples) as well;
* per item, in row order: ``item_pass@1`` (1 if the greedy completion succeeded, else 0) and
  ``item_successes`` (how many of the ``k`` samples succeeded), with ``items_digest`` (a hash of the prompts in
  order). The comparison report pairs arms item by item on these (`relabel_rl.stats`): every arm and seed is
  scored on the same rows, so the digest must match for two evaluations to be paired.

Greedy decoding is batched (``batch_size`` prompts per call, 64 by default): 500 rows of the tiny preset take
about a second of CPU, so the default evaluation is large (``eval.num_examples: 500``) rather than noisy.

The samples are drawn from a generator seeded with ``seed`` (not the training RNG), so the same policy gives the
same numbers, and evaluating does not perturb training's random stream. Scoring goes through a fresh
`verifiers.ContainedVerifier`, so a broken verifier scores 0 (counted in ``verifier_failures``) and never crashes
a run; evaluation's verifier calls are not counted in any training budget.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_rl.generation import GenerationBackend, HFBackend
from llm_rl.model.policy import Policy
from verifiers import ContainedVerifier, Verifier

__all__ = ["evaluate", "items_digest", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` succeed: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(
    policy_or_backend: Policy | GenerationBackend,
    verifier: Verifier,
    dataset: Any,
    *,
    k: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 160,
    batch_size: int = 64,
    num_examples: int | None = None,
    success_threshold: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    return_completions: bool = False,
) -> dict[str, Any]:
    """Evaluate on ``dataset`` (rows with a ``prompt`` column and whatever the verifier reads).

    Args:
      policy_or_backend: a `Policy` (an uncounted `HFBackend` is made) or a backend (its budget, if any, is
        detached while evaluating).
      verifier: scores completions (wrapped in a fresh `ContainedVerifier`).
      dataset: a ``datasets.Dataset`` or a sequence of dict rows.
      k: samples per example for pass@k (0: greedy only; ``pass@k`` is then None).
      temperature: sampling temperature for the k samples.
      max_new_tokens: the completion length limit (generation stops at EOS).
      batch_size: prompts per generation call.
      num_examples: evaluate the first ``num_examples`` rows only (None: all).
      success_threshold: a score at or above this counts as a success.
      seed: seeds the sampling generator.
      progress: show a progress bar.
      return_completions: add ``"completions"``: per example, the greedy text and the sampled texts + scores.

    Returns:
      ``{"pass@1", "pass@k", "k", "mean_score", "greedy_mean_score", "sample_pass@1", "n",
      "verifier_failures", "item_pass@1", "item_successes", "items_digest"}`` (plus ``"completions"`` on
      request).
    """
    rows = _rows(dataset, num_examples, k=k, batch_size=batch_size)
    backend = (
        HFBackend(policy_or_backend, None) if isinstance(policy_or_backend, Policy) else policy_or_backend
    )
    saved_budget = backend.budget
    backend.budget = None
    contained = ContainedVerifier(verifier)
    generator = torch.Generator().manual_seed(seed)
    scored = _Scored()
    try:
        bar = tqdm(total=len(rows), desc="eval", leave=False, disable=not progress)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            _score_batch(backend, contained, batch, scored, k=k, temperature=temperature,
                         max_new_tokens=max_new_tokens, generator=generator, keep=return_completions)  # fmt: skip
            bar.update(len(batch))
        bar.close()
    finally:
        backend.budget = saved_budget
        contained.close()
    result = _summarise(scored.greedy, scored.samples, k=k, success_threshold=success_threshold)
    result["verifier_failures"] = contained.stats.as_dict()
    result["items_digest"] = items_digest([r["prompt"] for r in rows])
    if return_completions:
        result["completions"] = scored.completions
    return result


@dataclass
class _Scored:
    """What `evaluate` accumulates over batches."""

    greedy: list[float] = field(default_factory=list)
    samples: list[list[float]] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)


def _score_batch(
    backend: Any, contained: ContainedVerifier, batch: list[dict], scored: _Scored, *, k: int, temperature: float,
    max_new_tokens: int, generator: torch.Generator, keep: bool,
) -> None:  # fmt: skip
    """One batch: greedy completions (batched) and, when ``k > 0``, ``k`` samples per row, all scored."""
    prompts = [r["prompt"] for r in batch]
    greedy = backend.greedy(prompts, max_new_tokens=max_new_tokens, stop=None)
    g_scores = [contained.score(c.text, r) for c, r in zip(greedy, batch)]
    scored.greedy += g_scores
    samples: list[list[Any]] = [[] for _ in batch]
    s_scores: list[list[float]] = [[] for _ in batch]
    if k > 0:
        samples = backend.sample(
            prompts,
            n=k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=None,
            generator=generator,
        )
        s_scores = [[contained.score(c.text, r) for c in group] for group, r in zip(samples, batch)]
        scored.samples += s_scores
    if keep:
        scored.completions += [
            {"prompt": r["prompt"], "greedy": g.text, "greedy_score": g_scores[i],
             "samples": [c.text for c in samples[i]], "sample_scores": s_scores[i]}
            for i, (g, r) in enumerate(zip(greedy, batch))
        ]  # fmt: skip


def _summarise(
    greedy_scores: list[float], sample_scores: list[list[float]], *, k: int, success_threshold: float
) -> dict[str, Any]:
    """pass@1, pass@k and mean scores from the greedy and the sampled scores (the module docstring's numbers)."""
    n = len(greedy_scores)
    greedy_ok = [int(s >= success_threshold) for s in greedy_scores]
    result: dict[str, Any] = {
        "pass@1": sum(greedy_ok) / n,
        "greedy_mean_score": sum(greedy_scores) / n,
        "k": k,
        "n": n,
        "item_pass@1": greedy_ok,
    }
    if k > 0:
        successes = [sum(s >= success_threshold for s in group) for group in sample_scores]
        result["item_successes"] = successes
        result["pass@k"] = sum(pass_at_k(k, c, k) for c in successes) / n
        result["mean_score"] = sum(sum(group) for group in sample_scores) / (n * k)
        result["sample_pass@1"] = sum(successes) / (n * k)
    else:
        result["pass@k"] = None
        result["mean_score"] = result["greedy_mean_score"]
        result["sample_pass@1"] = None
        result["item_successes"] = None
    return result


def items_digest(prompts: list[str]) -> str:
    """A short hash of the evaluated prompts in order: two evaluations with the same digest scored the same rows."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _rows(dataset: Any, num_examples: int | None, *, k: int, batch_size: int) -> list[dict]:
    """The rows to evaluate (the first ``num_examples``), after checking the arguments."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_examples is not None:
        dataset = (
            dataset.select(range(min(num_examples, len(dataset))))
            if hasattr(dataset, "select")
            else list(dataset)[:num_examples]
        )
    rows = [dict(r) for r in dataset]
    if not rows:
        raise ValueError("evaluate: the dataset is empty")
    return rows
