"""The gradient-variance probe: how noisy is each arm's per-prompt gradient, as tasks get longer?

The seed's mechanism says outcome-only policy gradient (GRPO) spreads one scalar over the whole completion, so its
gradient noise should grow with the number of reasoning steps, while the relabeller supervises every step with a
search-made target, so its noise should not. This module measures it, whatever the answer:

1. at one checkpoint (all arms at the *same* parameters, so only the estimators differ), for each task length
   ``L`` in ``probe.lengths`` it draws ``probe.prompts_per_length`` held-out prompts with exactly ``L`` operations
   (the verifier's ``min_steps``/``max_steps`` difficulty knobs; a verifier without them is binned by its rows'
   ``num_steps`` column instead);
2. for each prompt it asks each arm for ``probe.repeats`` independent estimates of its training loss
   (``arm.gradient_sample``; each with its own seeded ``torch.Generator``) and back-propagates each one to the
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

from relabel_rl.report import linear_trend, mean_ci

__all__ = [
    "GradientAccumulator",
    "GradientStats",
    "cmd_probe_variance",
    "examples_for_length",
    "gradient_statistics",
    "markdown_section",
    "plot_variance",
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
    from tqdm.auto import tqdm

    from llm_rl.arms import get_arm

    lengths, n, repeats = list(cfg.probe.lengths), cfg.probe.prompts_per_length, cfg.probe.repeats
    if repeats < 2:
        raise ValueError(f"probe.repeats must be >= 2 to estimate a variance, got {repeats}")
    examples = {
        L: examples_for_length(verifier, cfg.task.difficulty, L, n, seed=10_000 + seed + 97 * L)
        for L in lengths
    }
    params = trainable_lm_parameters(policy)
    policy.train()
    records: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    total = len(arms) * len(lengths) * n * repeats
    bar = tqdm(total=total, desc="variance probe", unit="grad", disable=not progress, file=sys.stderr)
    for a_index, arm_name in enumerate(arms):
        arm = get_arm(arm_name)
        t0 = time.perf_counter()
        for L in lengths:
            for i, example in enumerate(examples[L]):
                acc = GradientAccumulator()
                for r in range(repeats):
                    policy.zero_grad(set_to_none=True)
                    loss = arm.gradient_sample(
                        cfg, policy, verifier, example, generator=_generator(seed, a_index, L, i, r)
                    )
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
            rel = [r["relative_variance"] for r in at if _on_log_scale(r)]
            logs = mean_ci([math.log10(v) for v in rel])
            snr = mean_ci([r["snr"] for r in at if _on_log_scale(r) and math.isfinite(r["snr"])])
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
        xs = [r["length"] for r in recs if _on_log_scale(r)]
        ys = [math.log10(r["relative_variance"]) for r in recs if _on_log_scale(r)]
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


def _on_log_scale(rec: Mapping[str, Any]) -> bool:
    """A prompt whose relative variance enters the log-scale statistics: defined, positive, not deterministic."""
    return _finite_positive(rec.get("relative_variance")) and not rec.get("deterministic")


def _finite_positive(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v) and v > 0


def _pow10(v: float) -> float:
    return math.nan if math.isnan(v) else 10.0**v


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def plot_variance(variance: Mapping[str, Any], path: str | Path) -> Path:
    """A PNG: per arm, the geometric-mean relative variance per length with its 95 % interval (log y), and every
    prompt's value as a faint dot."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from llm_rl.report import ARM_LABELS

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arms = variance.get("arms", {})
    width = 0.12 * max(1, len(arms))
    for i, (arm, data) in enumerate(arms.items()):
        c = colours[i % len(colours)]
        shift = (i - (len(arms) - 1) / 2) * width / max(1, len(arms))
        pts = [r for r in data.get("per_prompt", []) if _on_log_scale(r)]
        ax.scatter(
            [r["length"] + shift for r in pts],
            [r["relative_variance"] for r in pts],
            color=c,
            alpha=0.3,
            s=10,
        )
        bins = [b for b in data.get("bins", []) if _finite_positive(b.get("relative_variance_geomean"))]
        xs = [b["length"] + shift for b in bins]
        ys = [b["relative_variance_geomean"] for b in bins]
        lo = [
            y - b["relative_variance_low"] if _finite_positive(b["relative_variance_low"]) else 0
            for y, b in zip(ys, bins)
        ]
        hi = [
            b["relative_variance_high"] - y if _finite_positive(b["relative_variance_high"]) else 0
            for y, b in zip(ys, bins)
        ]
        t = data.get("trend", {})
        slope = t.get("slope")
        slope_txt = f", slope {slope:+.2f} log10/step" if slope is not None and math.isfinite(slope) else ""
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            color=c,
            marker="o",
            capsize=3,
            linewidth=2,
            label=f"{ARM_LABELS.get(arm, arm)}{slope_txt}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("task length (operations)")
    ax.set_ylabel("relative gradient variance  E‖g−ḡ‖² / ‖ḡ‖²")
    ax.set_title(
        f"Per-prompt gradient noise vs length ({variance.get('repeats', '?')} estimates/prompt)\n"
        "(geometric mean over prompts, 95% CI; dots: single prompts)",
        fontsize=10,
    )
    lengths = variance.get("lengths") or []
    if lengths:
        ax.set_xticks(lengths)
    ax.grid(True, alpha=0.3, which="both")
    if arms:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def markdown_section(
    variance: Mapping[str, Any], out: str | Path, *, plots: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """The report's "Gradient variance vs task length" section (markdown lines) and its computed verdict (with
    ``text``); draws ``variance_vs_length.png`` into ``out`` when ``plots``."""
    from llm_rl.verdicts import ARM_LABELS, variance_sentence
    from relabel_rl.report import markdown_table

    sentence, verdict = variance_sentence(variance)
    verdict = {**verdict, "text": sentence}
    rows = []
    for arm, data in variance.get("arms", {}).items():
        for b in data.get("bins", []):
            rows.append(
                [
                    ARM_LABELS.get(arm, arm),
                    b["length"],
                    _fmt_float(b.get("relative_variance_geomean")),
                    f"[{_fmt_float(b.get('relative_variance_low'))}, {_fmt_float(b.get('relative_variance_high'))}]",
                    _fmt_float(b.get("relative_variance_median")),
                    _fmt_float(b.get("snr_mean")),
                    f"{b.get('n_defined', 0)}/{b.get('n_prompts', 0)}",
                    _fmt_float(b.get("zero_gradient_fraction")),
                    _fmt_float(b.get("noise_dominated_fraction")),
                    _fmt_float(b.get("deterministic_fraction")),
                ]
            )
    name = "variance_vs_length.png"
    if plots:
        plot_variance(variance, Path(out) / name)
    lines = [
        "## Gradient variance vs task length",
        "",
        f"Per-prompt gradient estimates at the checkpoint `{variance.get('checkpoint', '?')}` "
        f"({variance.get('repeats', '?')} independent estimates per prompt, all policy parameters). Relative variance "
        "is E‖g − ḡ‖² / ‖ḡ‖² (unbiased trace of the covariance over the squared norm of the mean); SNR is "
        "‖ḡ‖ / √(E‖g − ḡ‖²). Prompts whose mean gradient is exactly zero (e.g. a GRPO group with equal rewards) "
        "have no relative variance and are counted apart; a prompt is noise-dominated when ‖ḡ‖² ≤ tr Σ̂ / R (its "
        "mean gradient cannot be told from noise at R repeats, and its relative variance is an underestimate); "
        "deterministic when its R estimates agree to float rounding (no sampling noise: counted apart, not put on "
        "the log scale).",
        "",
        markdown_table(
            [
                "arm",
                "length",
                "rel. variance (geo-mean)",
                "95% CI",
                "median",
                "SNR (mean)",
                "defined",
                "zero-grad share",
                "noise-dominated share",
                "deterministic share",
            ],
            rows,
            align="lrrrrrrrrr",
        ),
        "",
        f"- {sentence}",
        "",
    ]
    return lines + ([f"![{name}]({name})", ""] if plots else []), verdict


def _fmt_float(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    return f"{v:.3g}"


def run_probe(
    cfg: Any, checkpoint: str | Path, out_dir: str | Path, *, arms: Sequence[str], progress: bool = True
) -> dict[str, Any]:
    """Load ``checkpoint``, probe ``arms``, write ``variance.json`` and ``variance_vs_length.png`` to ``out_dir``."""
    import verifiers
    from llm_rl.models import load_policy
    from relabel_rl.rundir import seed_everything

    seed_everything(cfg.seed)
    policy = load_policy(
        checkpoint, lora=cfg.model.lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )
    timeout = cfg.task.verifier_timeout if cfg.task.verifier_timeout is not None else "auto"
    verifier = verifiers.ContainedVerifier(verifiers.load(cfg.task.verifier), timeout=timeout)
    raw = probe_gradient_variance(cfg, policy, verifier, arms=arms, seed=cfg.seed, progress=progress)
    result = {"checkpoint": str(checkpoint), "task": cfg.task.verifier, **summarise_probe(raw)}
    result["verifier_stats"] = verifier.stats.as_dict()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variance.json").write_text(json.dumps(_jsonable(result), indent=2))
    plot_variance(result, out / "variance_vs_length.png")
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def cmd_probe_variance(argv: Sequence[str]) -> int:
    """``llm-rl probe-variance RECIPE [--checkpoint PATH] [--out DIR] [--arms a,b] [--section.key value ...]``.

    Without ``--checkpoint`` the recipe's warm start is built (or reused) under ``output_dir`` and probed there.
    """
    from llm_rl.commands import (
        CommandError,
        configure_threads,
        parse_command,
        prepare_experiment,
        run_command,
    )

    def body() -> int:
        _, own, cfg = parse_command(
            argv,
            prog="llm-rl probe-variance",
            flags={"checkpoint": True, "out": True, "arms": True},
            usage=cmd_probe_variance.__doc__ or "",
        )
        arms = own["arms"].split(",") if own.get("arms") else list(cfg.compare.arms)
        from llm_rl.commands import validate_experiment

        validate_experiment(cfg, arms=arms, probe=True)
        configure_threads(cfg)
        out_dir = Path(own.get("out") or Path(cfg.output_dir) / "probe")
        checkpoint = own.get("checkpoint")
        if checkpoint is None:
            checkpoint = prepare_experiment(cfg, Path(cfg.output_dir))[0]["path"]
        elif not Path(checkpoint).exists():
            raise CommandError(f"checkpoint not found: {checkpoint}")
        result = run_probe(cfg, checkpoint, out_dir, arms=arms)
        from llm_rl.report import variance_sentence

        print(variance_sentence(result)[0])
        print(
            f"variance probe written to {out_dir / 'variance.json'} and {out_dir / 'variance_vs_length.png'}"
        )
        return 0

    return run_command(body)
