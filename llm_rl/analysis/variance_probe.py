"""The gradient-variance probe: how noisy is each arm's per-prompt gradient, as tasks get longer?

The seed's mechanism says outcome-only policy gradient (GRPO) spreads one scalar over the whole completion, so its
gradient noise should grow with the number of reasoning steps, while the relabeller supervises every step with a
search-made target, so its noise should not. This module measures it, whatever the answer:

1. at one checkpoint (all arms at the *same* parameters, so only the estimators differ), for each task length
   ``L`` (``probe.lengths``; by default every length the warm start trained on — lengths outside that range are
   refused, since a policy never trained on them says little about its estimator there) it draws
   ``probe.prompts_per_length`` held-out prompts with exactly ``L`` operations (the ``min_steps``/``max_steps``
   knobs; a verifier without them is binned by its rows' ``num_steps`` column instead);
2. for each prompt it asks each arm for ``probe.repeats`` independent estimates of its training loss
   (``arm.gradient_sample``, each with its own seeded ``torch.Generator``) and back-propagates each one to the
   policy's trainable LM parameters (the value head excluded, since GRPO has none), flattened into one vector
   ``g``. The sampler and verifier are metered into a scratch `Budget` (nothing is charged to any run), so the
   generation cost of one estimate is known;
3. per prompt: ``ḡ`` the mean of the ``R`` estimates, ``tr Σ̂ = Σ‖g_r − ḡ‖² / (R − 1)`` (unbiased), and the
   unbiased signal ``‖ḡ‖² − tr Σ̂ / R`` (an estimate of ‖E g‖²). Only two running sums are kept (Σ g in float64
   and Σ‖g‖²), so memory is two parameter-sized vectors whatever ``R`` is;
4. per length, the **pooled relative variance** ``Σ_p tr Σ̂_p / Σ_p (‖ḡ_p‖² − tr Σ̂_p / R)``: a ratio of two
   unbiased sums over *all* prompts, with a percentile bootstrap interval over prompts; and the same **per unit
   of generation cost**, multiplied by the mean generated tokens of one estimate and divided by 1,000 (the
   relative variance of a gradient averaged over 1,000 generated tokens of that prompt's estimates: what a token
   budget buys);
5. the trend: the least-squares slope of log10 pooled relative variance on length, its 95 % interval from the same
   bootstrap (prompts resampled within every length at once), for both measures.

Why pooled, not a mean of per-prompt ratios (what this module did before): the per-prompt ratio
``tr Σ̂ / ‖ḡ‖²`` is biased and bounded — when one of R estimates is non-zero and the others are exactly zero (a
GRPO group whose rewards were all equal has no gradient), it equals R exactly, whatever the truth; and a prompt
whose R estimates are all zero has no ratio at all and was dropped, which at long lengths dropped most of GRPO's
prompts (the ones with least signal). In the pooled ratio such prompts stay in: an all-zero prompt adds zero noise
and zero signal, a one-non-zero prompt adds its noise and (correctly, in expectation) no signal. Their shares are
still counted and reported per length (``zero_share``, ``capped_share``), as is the share of prompts whose own
signal estimate is not positive (``noise_dominated_share``). When the pooled signal of a length is not positive
the mean gradient cannot be told from noise at that many repeats: its relative variance is reported as
undefined (a lower bound is all the data give), and so is any slope through it.
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
from llm_rl.analysis.variance_report import plot_variance
from llm_rl.analysis.variance_stats import summarise_arm
from llm_rl.arms import arm_class
from llm_rl.generation import make_backend
from llm_rl.grid import probe_lengths, warm_difficulty
from llm_rl.harness.budget import Budget
from llm_rl.harness.metering import MeteredVerifier, StepContext
from llm_rl.harness.user_data import task_verifier
from llm_rl.model import load_policy
from relabel_rl.config import config_to_dict
from relabel_rl.rundir import jsonable, seed_everything

__all__ = [
    "GradientAccumulator",
    "GradientStats",
    "ProbeShard",
    "compute_shard",
    "examples_for_length",
    "finish_probe",
    "gradient_statistics",
    "merge_shards",
    "pending_shards",
    "policy_gradient_vector",
    "probe_gradient_variance",
    "probe_settings",
    "probe_shard",
    "probe_shards",
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
    g.manual_seed(_mix(seed, *parts))
    return g


@dataclass(frozen=True)
class ProbeShard:
    """One arm at one length: the probe's unit of work (`llm_rl.workers` runs shards in parallel).

    A shard's estimates are seeded from ``(seed, arm_index, length, prompt, repeat)`` and the global RNGs are
    reseeded from ``(seed, arm_index, length)`` before it, so its records do not depend on which process ran it
    or on what ran before it."""

    arm: str
    arm_index: int
    length: int

    @property
    def name(self) -> str:
        return f"probe {self.arm} L={self.length}"


def probe_shards(cfg: Any, arms: Sequence[str]) -> list[ProbeShard]:
    """Every (arm, length) of the probe, longest lengths first (the most expensive shards: start them first)."""
    lengths = probe_lengths(cfg, verifiers.load(cfg.task.verifier))
    return [ProbeShard(a, i, L) for L in sorted(lengths, reverse=True) for i, a in enumerate(arms)]


def probe_shard(
    cfg: Any, policy: Any, verifier: Any, shard: ProbeShard, *, seed: int = 0, bar: Any = None
) -> dict[str, Any]:
    """``probe.prompts_per_length`` prompts x ``probe.repeats`` gradient estimates of one arm at one length.

    Returns ``{"records": [per-prompt stats and costs], "seconds": ..., "skipped": None or why}``; an arm without
    a per-prompt estimator (``gradient_sample`` raises NotImplementedError) is skipped, not failed."""
    n, repeats = cfg.probe.prompts_per_length, cfg.probe.repeats
    if repeats < 2:
        raise ValueError(f"probe.repeats must be >= 2 to estimate a variance, got {repeats}")
    L = shard.length
    examples = examples_for_length(verifier, warm_difficulty(cfg), L, n, seed=10_000 + seed + 97 * L)
    params = trainable_lm_parameters(policy)
    contained = (
        verifier
        if isinstance(verifier, verifiers.ContainedVerifier)
        else verifiers.ContainedVerifier(verifier)
    )
    meter = Budget()  # a scratch meter: the cost of each estimate, charged to no run
    metered = MeteredVerifier(contained, meter, feedback=cfg.task.feedback)
    sampler = make_backend(cfg.model.generation_backend, policy, meter)
    policy.train()
    seed_everything(_mix(seed, shard.arm_index, L))
    arm = arm_class(shard.arm)(cfg)
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        for i, example in enumerate(examples):
            gens = [_generator(seed, shard.arm_index, L, i, r) for r in range(repeats)]
            stats, cost = _prompt_estimates(arm, example, policy, params, sampler, metered, meter, gens, bar)
            records.append({"arm": shard.arm, "length": L, "prompt": example["prompt"], **stats, **cost})
    except NotImplementedError as e:
        return {"records": [], "seconds": time.perf_counter() - t0, "skipped": str(e)}
    finally:
        policy.zero_grad(set_to_none=True)
    return {"records": records, "seconds": time.perf_counter() - t0, "skipped": None}


def probe_gradient_variance(
    cfg: Any,
    policy: Any,
    verifier: Any,
    *,
    arms: Sequence[str],
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the probe on ``policy`` for ``arms`` in this process; return the per-prompt records (see
    `summarise_probe`).

    An arm without a per-prompt estimator (``gradient_sample`` raises NotImplementedError) is listed under
    ``"skipped"`` rather than failing the probe."""
    shards = probe_shards(cfg, arms)
    bar = tqdm(
        total=len(shards) * cfg.probe.prompts_per_length * cfg.probe.repeats, desc="variance probe",
        unit="grad", disable=not progress, file=sys.stderr,
    )  # fmt: skip
    parts = {s: probe_shard(cfg, policy, verifier, s, seed=seed, bar=bar) for s in shards}
    bar.close()
    return merge_shards(cfg, arms, parts, num_parameters=_num_parameters(policy))


def merge_shards(
    cfg: Any, arms: Sequence[str], parts: Mapping[ProbeShard, Mapping[str, Any]], *, num_parameters: int
) -> dict[str, Any]:
    """The probe's raw result from its shards' results, in a fixed order (arm, then length): the same records
    whatever order, or process, the shards ran in."""
    lengths = sorted({s.length for s in parts})
    skipped = {s.arm: p["skipped"] for s, p in parts.items() if p.get("skipped")}
    records: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for arm in arms:
        mine = sorted((s for s in parts if s.arm == arm), key=lambda s: s.length)
        timings[arm] = float(sum(parts[s]["seconds"] for s in mine))
        if arm not in skipped:
            records += [r for s in mine for r in parts[s]["records"]]
    return {
        "lengths": lengths,
        "prompts_per_length": cfg.probe.prompts_per_length,
        "repeats": cfg.probe.repeats,
        "difficulty": warm_difficulty(cfg),
        "num_parameters": num_parameters,
        "seconds": timings,
        "skipped": skipped,
        "per_prompt": records,
    }


def _num_parameters(policy: Any) -> int:
    return int(sum(p.numel() for p in trainable_lm_parameters(policy)))


def _mix(seed: int, *parts: int) -> int:
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 7) % (2**63 - 1)
    return h


_COST_KEYS = ("generated_tokens", "prefill_tokens", "outcome_verifier_calls", "step_verifier_calls")


def _prompt_estimates(
    arm: Any, example: dict, policy: Any, params: Sequence[torch.nn.Parameter], sampler: Any, verifier: Any,
    meter: Budget, generators: Sequence[torch.Generator], bar: Any,
) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """One prompt's ``len(generators)`` gradient estimates: their `GradientStats` and the mean cost of one."""
    acc, spent = GradientAccumulator(), dict.fromkeys(_COST_KEYS, 0)
    for generator in generators:
        policy.zero_grad(set_to_none=True)
        before = {k: getattr(meter, k) for k in _COST_KEYS}
        ctx = StepContext(policy=policy, sampler=sampler, verifier=verifier, generator=generator)
        loss = arm.gradient_sample(example, ctx)
        for k in _COST_KEYS:
            spent[k] += getattr(meter, k) - before[k]
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        acc.add(policy_gradient_vector(params))
        if bar is not None:
            bar.update(1)
    return asdict(acc.stats()), {f"{k}_per_estimate": v / len(generators) for k, v in spent.items()}


def summarise_probe(raw: Mapping[str, Any], *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per-arm, per-length bins and the length trends from `probe_gradient_variance`'s per-prompt records
    (`llm_rl.analysis.variance_stats`: pooled relative variance, per gradient and per 1,000 generated tokens)."""
    out = {k: v for k, v in raw.items() if k != "per_prompt"}
    arms: dict[str, Any] = {}
    for rec in raw["per_prompt"]:
        arms.setdefault(rec["arm"], {"per_prompt": []})["per_prompt"].append(rec)
    for data in arms.values():
        data.update(summarise_arm(data["per_prompt"], int(raw["repeats"]), resamples=resamples, seed=seed))
    out["arms"] = arms
    return out


def probe_settings(cfg: Any, checkpoint: str | Path, arms: Sequence[str]) -> dict[str, Any]:
    """What a probe's result depends on; `llm-rl compare` reruns the probe when these change."""
    return {
        "checkpoint": str(checkpoint),
        "arms": list(arms),
        "probe": config_to_dict(cfg.probe),
        "difficulty": warm_difficulty(cfg),
    }


def run_probe(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, *, arms: Sequence[str], progress: bool = True
) -> dict[str, Any]:
    """Load ``checkpoint``, probe ``arms`` in this process, write ``variance.json`` and ``variance_vs_length.png``
    to ``out_dir``. Each finished shard is kept in ``out_dir/probe_parts/``, so an interrupted probe resumes;
    `llm-rl compare --workers N` runs the shards in parallel instead (`compute_shard`, then `finish_probe`)."""
    shards = pending_shards(cfg, checkpoint, out_dir, arms)
    if shards:
        policy = _load(cfg, checkpoint)
        bar = tqdm(
            total=len(shards) * cfg.probe.prompts_per_length * cfg.probe.repeats, desc="variance probe",
            unit="grad", disable=not progress, file=sys.stderr,
        )  # fmt: skip
        for shard in shards:
            _compute(cfg, policy, checkpoint, out_dir, shard, arms, bar)
        bar.close()
    return finish_probe(cfg, checkpoint, out_dir, arms)


PARTS = "probe_parts"


def _part_file(out_dir: str | Path, shard: ProbeShard) -> Path:
    return Path(out_dir) / PARTS / f"{shard.arm.replace(':', '_').replace('/', '_')}-L{shard.length}.json"


def _read_part(out_dir: str | Path, shard: ProbeShard, settings: Any) -> dict[str, Any] | None:
    """A shard's saved result when it was computed with these settings, else None."""
    path = _part_file(out_dir, shard)
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return part if part.get("settings") == settings and part.get("shard") == asdict(shard) else None


def pending_shards(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, arms: Sequence[str]
) -> list[ProbeShard]:
    """The shards of the probe with no saved result for the current settings (longest first)."""
    settings = jsonable(probe_settings(cfg, checkpoint, arms))
    return [s for s in probe_shards(cfg, arms) if _read_part(out_dir, s, settings) is None]


def compute_shard(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, shard: ProbeShard, arms: Sequence[str]
) -> dict[str, Any]:
    """Probe one shard in this process (a `llm_rl.workers` job): load ``checkpoint``, save the shard's part."""
    return _compute(cfg, _load(cfg, checkpoint), checkpoint, out_dir, shard, arms, None)


def _load(cfg: Any, checkpoint: str | Path) -> Any:
    seed_everything(cfg.seed)  # a checkpoint without a value head gets one initialised from the seed
    return load_policy(
        checkpoint, lora=cfg.model.lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )


def _compute(
    cfg: Any, policy: Any, checkpoint: str | Path, out_dir: str | Path, shard: ProbeShard,
    arms: Sequence[str], bar: Any,
) -> dict[str, Any]:  # fmt: skip
    timeout = cfg.task.verifier_timeout if cfg.task.verifier_timeout is not None else "auto"
    verifier = verifiers.ContainedVerifier(task_verifier(cfg), timeout=timeout)
    part = probe_shard(cfg, policy, verifier, shard, seed=cfg.seed, bar=bar)
    part.update(
        settings=jsonable(probe_settings(cfg, checkpoint, arms)),
        shard=asdict(shard),
        num_parameters=_num_parameters(policy),
        verifier_stats=verifier.stats.as_dict(),
    )
    path = _part_file(out_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jsonable(part)))
    tmp.replace(path)  # atomic: a killed probe leaves a whole part or none
    return part


def finish_probe(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, arms: Sequence[str]
) -> dict[str, Any]:
    """Merge every shard's saved part into ``variance.json`` (+ its figure) in ``out_dir``; return the result.

    Raises:
      RuntimeError: a shard has no saved part for the current settings (run it first).
    """
    settings = jsonable(probe_settings(cfg, checkpoint, arms))
    parts: dict[ProbeShard, dict[str, Any]] = {}
    for shard in probe_shards(cfg, arms):
        part = _read_part(out_dir, shard, settings)
        if part is None:
            raise RuntimeError(
                f"{shard.name}: no result in {_part_file(out_dir, shard)}; run the probe first"
            )
        parts[shard] = part
    raw = merge_shards(cfg, arms, parts, num_parameters=next(iter(parts.values()))["num_parameters"])
    stats: dict[str, int] = {}
    for part in parts.values():
        for k, v in part["verifier_stats"].items():
            stats[k] = stats.get(k, 0) + int(v)
    result = {
        "checkpoint": str(checkpoint),
        "task": cfg.task.verifier,
        "settings": probe_settings(cfg, checkpoint, arms),
        **summarise_probe(raw),
        "verifier_stats": stats,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variance.json").write_text(json.dumps(jsonable(result), indent=2))
    plot_variance(result, out / "variance_vs_length.png")
    return result
