"""The gradient-variance probe: how noisy is each arm's per-prompt gradient, as tasks get longer?

The seed's mechanism says outcome-only policy gradient (GRPO) spreads one scalar over the whole completion, so its
gradient noise should grow with the number of reasoning steps, while the relabeller supervises every step with a
search-made target, so its noise should not. This module measures it, whatever the answer:

1. at one checkpoint (all arms at the *same* parameters, so only the estimators differ), for each task length
   ``L`` in ``probe.lengths`` it draws ``probe.prompts_per_length`` held-out prompts with exactly ``L`` operations
   (the verifier's ``min_steps``/``max_steps`` difficulty knobs; a verifier without them is binned by its rows'
   ``num_steps`` column instead);
2. for each prompt it asks each arm for ``probe.repeats`` independent estimates of its training loss
   (``arm.gradient_sample`` with an unmetered `StepContext`: nothing is charged; each estimate with its own seeded
   ``torch.Generator``) and back-propagates each one to the
   policy's trainable LM parameters (the value head excluded, since GRPO has none), flattened into one vector ``g``;
3. per prompt: ``ḡ`` the mean of the ``R`` estimates, ``tr Σ̂ = Σ‖g_r − ḡ‖² / (R − 1)`` (unbiased), relative
   variance ``tr Σ̂ / ‖ḡ‖²`` and signal-to-noise ``‖ḡ‖ / √tr Σ̂``. Only two running sums are kept (Σ g in float64
   and Σ‖g‖²), so memory is two parameter-sized vectors whatever ``R`` is;
4. per length: geometric mean of the relative variance with a 95 % t-interval on its log10 over prompts, median,
   mean SNR, and the share of estimates that were exactly zero (a GRPO group whose rewards are all equal has no
   signal at all — reported, not hidden). A prompt with ``ḡ = 0`` has no relative variance and is counted apart;
5. the trend: least-squares slope of log10 relative variance on length over all prompts, with a 95 % interval.

Departure from a plain "variance" definition: ``‖ḡ‖²`` is the squared norm of the *sample* mean, which is biased
upwards by ``tr Σ / R``; with few repeats the relative variance is therefore an underestimate, and it saturates
near ``R`` when the noise swamps the mean. Prompts where the unbiased ``‖ḡ‖² − tr Σ̂ / R`` is not positive are
flagged ``noise_dominated`` and their share is reported per length, so a saturated bin is visible as such.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import verifiers
from llm_rl.analysis.variance_report import on_log_scale, plot_variance
from llm_rl.arms import arm_class
from llm_rl.generation import make_backend
from llm_rl.harness.metering import MeteredVerifier, StepContext
from llm_rl.harness.user_data import task_verifier
from llm_rl.model import load_policy
from relabel_rl.report import linear_trend, mean_ci
from relabel_rl.rundir import jsonable, seed_everything

__all__ = [
    "GradientAccumulator",
    "GradientStats",
    "examples_for_length",
    "gradient_statistics",
    "policy_gradient_vector",
    "probe_gradient_variance",
    "run_probe",
    "summarise_probe",
]

# Below this relative variance the R estimates agree to float32 rounding: the gradient is deterministic.
DETERMINISTIC_RELATIVE_VARIANCE = 1e-9


@dataclass(frozen=True)
class GradientStats:
    """Statistics of ``num_samples`` gradient estimates of one prompt's loss.

    Attributes:
      num_samples: R, the number of estimates.
      mean_norm_sq: ‖ḡ‖², the squared norm of their mean.
      trace_cov: Σ‖g_r − ḡ‖² / (R − 1), the unbiased total variance (nan for R < 2).
      relative_variance: trace_cov / mean_norm_sq (nan when ḡ = 0).
      snr: ‖ḡ‖ / √trace_cov (inf when the estimates are all equal and non-zero; nan when ḡ = 0).
      zero_fraction: the share of estimates that were exactly the zero vector.
      deterministic: the estimates agree to float rounding (trace_cov <= 1e-9·‖ḡ‖², ḡ ≠ 0): this arm's gradient
        for this prompt has no sampling noise at all (e.g. a search whose candidates all coincide). Such prompts
        are counted apart rather than put on a log scale, where a rounding-level variance would swamp the rest.
      noise_dominated: ‖ḡ‖² <= trace_cov / R, i.e. the unbiased estimate of ‖E g‖² (‖ḡ‖² − tr Σ̂ / R) is not
        positive: the mean gradient cannot be told from noise at this many repeats. The relative variance of such
        a prompt is still reported (it is what the formula gives) but is an underestimate.
    """

    num_samples: int
    mean_norm_sq: float
    trace_cov: float
    relative_variance: float
    snr: float
    zero_fraction: float
    noise_dominated: bool = False
    deterministic: bool = False


class GradientAccumulator:
    """Streams gradient vectors and keeps only Σ g (float64) and Σ‖g‖², enough for `GradientStats`."""

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._sum_sq = 0.0
        self._n = 0
        self._zeros = 0

    def add(self, g: torch.Tensor) -> None:
        flat = g.detach().reshape(-1).to(torch.float64)
        if self._sum is None:
            self._sum = torch.zeros_like(flat)
        elif flat.numel() != self._sum.numel():
            raise ValueError(f"gradient size changed: {flat.numel()} vs {self._sum.numel()}")
        sq = float(flat.dot(flat))
        self._sum += flat
        self._sum_sq += sq
        self._n += 1
        self._zeros += int(sq == 0.0)

    def stats(self) -> GradientStats:
        n = self._n
        if n == 0 or self._sum is None:
            return GradientStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        mean = self._sum / n
        mean_norm_sq = float(mean.dot(mean))
        # Σ‖g_r − ḡ‖² = Σ‖g_r‖² − R‖ḡ‖² (float64); clamp the rounding error of a near-zero difference
        trace = math.nan if n < 2 else max(0.0, (self._sum_sq - n * mean_norm_sq) / (n - 1))
        if mean_norm_sq == 0.0 or math.isnan(trace):
            rel, snr = math.nan, math.nan
        else:
            rel = trace / mean_norm_sq
            snr = math.inf if trace == 0.0 else math.sqrt(mean_norm_sq / trace)
        noise_dominated = bool(n >= 2 and trace > 0.0 and mean_norm_sq <= trace / n)
        deterministic = bool(
            n >= 2 and mean_norm_sq > 0.0 and trace <= DETERMINISTIC_RELATIVE_VARIANCE * mean_norm_sq
        )
        return GradientStats(
            n, mean_norm_sq, trace, rel, snr, self._zeros / n, noise_dominated, deterministic
        )


def gradient_statistics(grads: Iterable[torch.Tensor]) -> GradientStats:
    """`GradientStats` of a sequence of gradient estimates (tensors of one shape)."""
    acc = GradientAccumulator()
    for g in grads:
        acc.add(g)
    return acc.stats()


def trainable_lm_parameters(policy: Any) -> list[torch.nn.Parameter]:
    """The policy's trainable language-model parameters (a LoRA adapter's only, under PEFT); no value head."""
    return [p for p in policy.model.parameters() if p.requires_grad]


def policy_gradient_vector(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """The current ``.grad`` of ``params`` flattened into one vector (a missing grad counts as zeros)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


# ---------------------------------------------------------------------------------------------------------------
# Prompts of a given length


def examples_for_length(
    verifier: Any, difficulty: Mapping[str, Any], length: int, n: int, *, seed: int, split: str = "test"
) -> list[dict]:
    """``n`` rows of ``verifier``'s held-out split with ``length`` operations.

    Uses the ``min_steps``/``max_steps`` difficulty knobs (overriding the recipe's); a generator without them is
    sampled in bulk and filtered on ``num_steps == length``.
    """
    knobs = {**dict(difficulty), "min_steps": length, "max_steps": length}
    try:
        return [dict(r) for r in verifier.generate(n, seed=seed, split=split, **knobs)]
    except ValueError as e:
        if "unknown difficulty knob" not in str(e):
            raise
    pool = verifier.generate(max(50 * n, 200), seed=seed, split=split, **dict(difficulty))
    rows = [dict(r) for r in pool if int(r["num_steps"]) == length][:n]
    if len(rows) < n:
        raise ValueError(
            f"{verifier.name}: has no min_steps/max_steps knobs and only {len(rows)} of {len(pool)} generated "
            f"rows have num_steps == {length}; choose probe.lengths the task produces"
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The probe


def _generator(seed: int, *parts: int) -> torch.Generator:
    g = torch.Generator()
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 7) % (2**63 - 1)
    g.manual_seed(h)
    return g


def probe_gradient_variance(
    cfg: Any,
    policy: Any,
    verifier: Any,
    *,
    arms: Sequence[str],
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the probe on ``policy`` for ``arms``; return the per-prompt records (see `summarise_probe`)."""
    lengths, n, repeats = list(cfg.probe.lengths), cfg.probe.prompts_per_length, cfg.probe.repeats
    if repeats < 2:
        raise ValueError(f"probe.repeats must be >= 2 to estimate a variance, got {repeats}")
    examples = {
        L: examples_for_length(verifier, cfg.task.difficulty, L, n, seed=10_000 + seed + 97 * L)
        for L in lengths
    }
    params = trainable_lm_parameters(policy)
    contained = (
        verifier
        if isinstance(verifier, verifiers.ContainedVerifier)
        else verifiers.ContainedVerifier(verifier)
    )
    unmetered = MeteredVerifier(contained, None, feedback=cfg.task.feedback)
    sampler = make_backend(cfg.model.generation_backend, policy, None)
    policy.train()
    records: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    total = len(arms) * len(lengths) * n * repeats
    bar = tqdm(total=total, desc="variance probe", unit="grad", disable=not progress, file=sys.stderr)
    for a_index, arm_name in enumerate(arms):
        arm = arm_class(arm_name)(cfg)
        t0 = time.perf_counter()
        for L in lengths:
            for i, example in enumerate(examples[L]):
                acc = GradientAccumulator()
                for r in range(repeats):
                    policy.zero_grad(set_to_none=True)
                    generator = _generator(seed, a_index, L, i, r)
                    ctx = StepContext(policy=policy, sampler=sampler, verifier=unmetered, generator=generator)
                    loss = arm.gradient_sample(example, ctx)
                    if isinstance(loss, torch.Tensor) and loss.requires_grad:
                        loss.backward()
                    acc.add(policy_gradient_vector(params))
                    bar.update(1)
                s = acc.stats()
                records.append({"arm": arm_name, "length": L, "prompt": example["prompt"], **asdict(s)})
        timings[arm_name] = time.perf_counter() - t0
    bar.close()
    policy.zero_grad(set_to_none=True)
    return {
        "lengths": lengths,
        "prompts_per_length": n,
        "repeats": repeats,
        "num_parameters": int(sum(p.numel() for p in params)),
        "seconds": timings,
        "per_prompt": records,
    }


def summarise_probe(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Per-arm, per-length bins and the length trend from `probe_gradient_variance`'s per-prompt records."""
    out = {k: v for k, v in raw.items() if k != "per_prompt"}
    arms: dict[str, Any] = {}
    for rec in raw["per_prompt"]:
        arms.setdefault(rec["arm"], {"per_prompt": []})["per_prompt"].append(rec)
    for data in arms.values():
        recs = data["per_prompt"]
        bins = []
        for L in sorted({r["length"] for r in recs}):
            at = [r for r in recs if r["length"] == L]
            rel = [r["relative_variance"] for r in at if on_log_scale(r)]
            logs = mean_ci([math.log10(v) for v in rel])
            snr = mean_ci([r["snr"] for r in at if on_log_scale(r) and math.isfinite(r["snr"])])
            bins.append(
                {
                    "length": L,
                    "n_prompts": len(at),
                    "n_defined": len(rel),
                    "relative_variance_geomean": _pow10(logs.mean),
                    "relative_variance_low": _pow10(logs.low),
                    "relative_variance_high": _pow10(logs.high),
                    "relative_variance_median": float(_median(rel)) if rel else math.nan,
                    "snr_mean": snr.mean,
                    "zero_gradient_fraction": sum(r["zero_fraction"] for r in at) / len(at),
                    "noise_dominated_fraction": sum(bool(r.get("noise_dominated")) for r in at) / len(at),
                    "deterministic_fraction": sum(bool(r.get("deterministic")) for r in at) / len(at),
                }
            )
        xs = [r["length"] for r in recs if on_log_scale(r)]
        ys = [math.log10(r["relative_variance"]) for r in recs if on_log_scale(r)]
        t = linear_trend(xs, ys)
        data["bins"] = bins
        data["trend"] = {
            "slope": t.slope,
            "low": t.low,
            "high": t.high,
            "intercept": t.intercept,
            "n": t.n,
            "direction": t.direction,
            "y": "log10 relative variance",
        }
    out["arms"] = arms
    return out


def _pow10(v: float) -> float:
    return math.nan if math.isnan(v) else 10.0**v


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def run_probe(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, *, arms: Sequence[str], progress: bool = True
) -> dict[str, Any]:
    """Load ``checkpoint``, probe ``arms``, write ``variance.json`` and ``variance_vs_length.png`` to ``out_dir``."""
    seed_everything(cfg.seed)
    policy = load_policy(
        checkpoint, lora=cfg.model.lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )
    timeout = cfg.task.verifier_timeout if cfg.task.verifier_timeout is not None else "auto"
    verifier = verifiers.ContainedVerifier(task_verifier(cfg), timeout=timeout)
    raw = probe_gradient_variance(cfg, policy, verifier, arms=arms, seed=cfg.seed, progress=progress)
    result = {"checkpoint": str(checkpoint), "task": cfg.task.verifier, **summarise_probe(raw)}
    result["verifier_stats"] = verifier.stats.as_dict()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variance.json").write_text(json.dumps(jsonable(result), indent=2))
    plot_variance(result, out / "variance_vs_length.png")
    return result
