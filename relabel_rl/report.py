"""Statistics and report helpers shared by every experiment that writes a report (`llm-rl compare`, Go matches).

A comparison with three seeds per arm is only worth reading with its uncertainty next to it, so every number a
report prints goes through one of these helpers:

* :func:`mean_ci` — the mean over seeds with a Student-t interval (seeds are few; a normal interval would be too
  narrow). :func:`difference_ci` — the Welch interval of a difference of two such means.
* :func:`wilson_interval` — a binomial rate (pass rate, win rate) with the Wilson score interval, which behaves at
  0 % and 100 % where the normal ("Wald") interval collapses to a point. Draws count as half a success.
* :func:`elo_difference` — the Elo gap implied by a score rate, with the interval mapped through the (monotone)
  logistic Elo curve from the Wilson interval of the rate.
* :func:`linear_trend` — least-squares slope with a t-interval (e.g. log relative gradient variance vs length).
* :func:`first_crossing` — the budget at which a learning curve first reaches a threshold.
* :func:`markdown_table`, :func:`format_ci` — text; :func:`write_table` — one table as Markdown, CSV and LaTeX
  (a paper takes the ``.tex``, a notebook the ``.csv``); :func:`plot_mean_ci` — mean ± CI bands over seeds
  (:func:`new_figure` / :func:`save_figure`: the size, style and saving every plot of the project shares: a PNG
  and a vector PDF beside it, the legend outside the axes so it never covers data).

Quantiles come from SciPy (``scipy.stats.t`` / ``norm``) and the regression from ``scipy.stats.linregress``; the
Wilson formula is written out here because SciPy's ``binomtest`` only takes integer successes, and draws make the
score fractional (the tests check it against ``binomtest`` on integer counts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relabel_rl.stats import interval_direction

__all__ = [
    "EloCI",
    "MeanCI",
    "RateCI",
    "TrendCI",
    "difference_ci",
    "elo_difference",
    "elo_from_score",
    "first_crossing",
    "format_ci",
    "interpolate_runs",
    "linear_trend",
    "markdown_table",
    "mean_ci",
    "new_figure",
    "new_grid",
    "plot_mean_ci",
    "save_figure",
    "save_grid",
    "wilson_interval",
    "write_table",
]


# ---------------------------------------------------------------------------------------------------------------
# Intervals


@dataclass(frozen=True)
class MeanCI:
    """A mean with a two-sided confidence interval.

    Attributes:
      mean: the sample mean (nan for no samples).
      low, high: the interval bounds; nan when it is undefined (fewer than two samples).
      n: the number of samples.
      std: the sample standard deviation (ddof=1; nan for n < 2).
      confidence: the interval's coverage, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    std: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def overlaps(self, other: MeanCI) -> bool | None:
        """Whether the two intervals overlap; None when either is undefined."""
        if any(math.isnan(v) for v in (self.low, self.high, other.low, other.high)):
            return None
        return self.low <= other.high and other.low <= self.high


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` with a Student-t interval: ``mean ± t_{n-1} · s / √n``. NaN values are dropped."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan, confidence)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, std, confidence)


def difference_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> MeanCI:
    """``mean(a) − mean(b)`` with a Welch t-interval (unequal variances, Welch–Satterthwaite df).

    ``n`` of the result is ``min(len(a), len(b))``; the interval is nan when either side has fewer than two
    samples. When both sample variances are zero the interval is the point difference.
    """
    from scipy import stats

    xa = np.asarray([v for v in a if v is not None and not math.isnan(v)], dtype=float)
    xb = np.asarray([v for v in b if v is not None and not math.isnan(v)], dtype=float)
    if xa.size == 0 or xb.size == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    diff = float(xa.mean() - xb.mean())
    n = int(min(xa.size, xb.size))
    if xa.size < 2 or xb.size < 2:
        return MeanCI(diff, math.nan, math.nan, n, math.nan, confidence)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return MeanCI(diff, diff, diff, n, 0.0, confidence)
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=df)) * se
    return MeanCI(diff, diff - half, diff + half, n, se, confidence)


@dataclass(frozen=True)
class RateCI:
    """A binomial rate with its Wilson score interval.

    Attributes:
      rate: successes / trials (nan for zero trials).
      low, high: the Wilson interval.
      successes: may be fractional (a draw counts 0.5).
      trials: the number of trials.
    """

    rate: float
    low: float
    high: float
    successes: float
    trials: int
    confidence: float = 0.95


def wilson_interval(successes: float, trials: int, *, confidence: float = 0.95) -> RateCI:
    """The Wilson score interval of a binomial proportion.

    ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the normal quantile. Fractional
    ``successes`` (draws as halves) are allowed.
    """
    from scipy import stats

    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return RateCI(math.nan, 0.0, 1.0, 0.0, 0, confidence)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    n = float(trials)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return RateCI(
        p, max(0.0, centre - half), min(1.0, centre + half), float(successes), int(trials), confidence
    )


@dataclass(frozen=True)
class EloCI:
    """An Elo difference (positive: the first player is stronger) with its interval; ±inf at 0 % / 100 %."""

    elo: float
    low: float
    high: float
    score: float
    games: int
    confidence: float = 0.95


def elo_from_score(score: float) -> float:
    """The Elo difference implied by an expected score in [0, 1]: ``−400·log10(1/score − 1)``."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score}")
    if score == 0.0:
        return -math.inf
    if score == 1.0:
        return math.inf
    return -400.0 * math.log10(1.0 / score - 1.0)


def elo_difference(wins: float, games: int, *, draws: float = 0.0, confidence: float = 0.95) -> EloCI:
    """Elo difference from ``wins`` (+ half of ``draws``) out of ``games``, with the Wilson interval mapped to Elo."""
    score = wins + 0.5 * draws
    rate = wilson_interval(score, games, confidence=confidence)
    if games == 0:
        return EloCI(math.nan, -math.inf, math.inf, math.nan, 0, confidence)
    return EloCI(
        elo_from_score(rate.rate),
        elo_from_score(rate.low),
        elo_from_score(rate.high),
        rate.rate,
        games,
        confidence,
    )


@dataclass(frozen=True)
class TrendCI:
    """A least-squares line ``y = intercept + slope·x`` with a t-interval on the slope."""

    slope: float
    low: float
    high: float
    intercept: float
    n: int
    confidence: float = 0.95

    @property
    def direction(self) -> str:
        """ "increasing" / "decreasing" when the interval excludes 0, "flat" otherwise ("unknown" if undefined)."""
        return interval_direction(self.low, self.high)


def linear_trend(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95) -> TrendCI:
    """Ordinary least squares of ``y`` on ``x`` (pairs with a nan or inf dropped); slope ± t_{n−2}·stderr."""
    from scipy import stats

    pairs = [
        (float(a), float(b)) for a, b in zip(x, y) if math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    n = len(pairs)
    if n < 2 or len({a for a, _ in pairs}) < 2:
        return TrendCI(math.nan, math.nan, math.nan, math.nan, n, confidence)
    xs, ys = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    fit = stats.linregress(xs, ys)
    if n < 3:
        return TrendCI(float(fit.slope), math.nan, math.nan, float(fit.intercept), n, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 2)) * float(fit.stderr)
    return TrendCI(float(fit.slope), fit.slope - half, fit.slope + half, float(fit.intercept), n, confidence)


# ---------------------------------------------------------------------------------------------------------------
# Curves


def first_crossing(xs: Sequence[float], ys: Sequence[float], threshold: float) -> float | None:
    """The first ``x`` (in the given order) at which ``y >= threshold``; None if the curve never gets there.

    No interpolation between evaluations: the budget reported is one at which the threshold was *measured*.
    """
    for x, y in zip(xs, ys):
        if y is not None and not math.isnan(y) and y >= threshold:
            return float(x)
    return None


def interpolate_runs(
    runs: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    num_points: int = 60,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Put several seeds' curves on one x grid and take mean and t-interval at every grid point.

    Each run is ``(xs, ys)`` with increasing ``xs``. The grid spans the smallest first x to the largest last x, plus
    every measured x when there are few. A run contributes at a grid point only inside its own measured range
    (linear interpolation between its points; no extrapolation), so ``n`` can vary along the grid and the band
    always says how many seeds it is made of.

    Returns: ``{"x", "mean", "low", "high", "n"}`` arrays of equal length.
    """
    cleaned = []
    for xs, ys in runs:
        pts = sorted(
            (float(a), float(b)) for a, b in zip(xs, ys) if b is not None and math.isfinite(float(b))
        )
        if pts:
            cleaned.append((np.array([p[0] for p in pts]), np.array([p[1] for p in pts])))
    if not cleaned:
        return {k: np.array([]) for k in ("x", "mean", "low", "high", "n")}
    lo = min(float(x[0]) for x, _ in cleaned)
    hi = max(float(x[-1]) for x, _ in cleaned)
    measured = np.unique(np.concatenate([x for x, _ in cleaned]))
    grid = (
        np.unique(np.concatenate([np.linspace(lo, hi, num_points), measured])) if hi > lo else np.array([lo])
    )
    mean, low, high, count = [], [], [], []
    for g in grid:
        vals = [float(np.interp(g, x, y)) for x, y in cleaned if x[0] <= g <= x[-1]]
        ci = mean_ci(vals, confidence=confidence)
        mean.append(ci.mean)
        low.append(ci.low)
        high.append(ci.high)
        count.append(ci.n)
    return {
        "x": grid,
        "mean": np.array(mean),
        "low": np.array(low),
        "high": np.array(high),
        "n": np.array(count),
    }


def plot_mean_ci(
    path: str | Path,
    curves: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    confidence: float = 0.95,
    logy: bool = False,
    logx: bool = False,
    markers: bool = False,
    hline: float | None = None,
    hline_label: str | None = None,
    ylim: tuple[float, float] | None = None,
    clip: tuple[float, float] | None = None,
) -> Path:
    """A PNG of one line per label: the mean over its runs with a shaded ``confidence`` band (t-interval).

    ``curves`` maps a label (an arm) to its runs (seeds), each ``(xs, ys)``. Thin lines show the individual
    seeds, so a band made of two seeds is not mistaken for a tight one. ``clip`` bounds the band to a range the
    quantity cannot leave (``(0, 1)`` for a pass rate). Uses the non-interactive Agg backend.
    """
    fig, ax, colours = new_figure()
    for i, (label, runs) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        for xs, ys in runs:
            ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8, marker="." if markers else None)
        stats_ = interpolate_runs(runs, confidence=confidence)
        if stats_["x"].size == 0:
            continue
        nmax = int(stats_["n"].max())
        # The mean is drawn only where every run of the label is measured: a mean that silently loses a seed
        # at the end of the axis would jump. The thin per-seed lines show the rest.
        full = stats_["n"] == nmax
        stats_ = {k: v[full] for k, v in stats_.items()}
        if clip is not None:
            stats_["low"] = np.clip(stats_["low"], *clip)
            stats_["high"] = np.clip(stats_["high"], *clip)
        ax.plot(
            stats_["x"],
            stats_["mean"],
            color=colour,
            linewidth=2.0,
            label=f"{label} (n={nmax})",
            marker="o" if markers else None,
            markevery=[j for j, x in enumerate(stats_["x"]) if _is_measured(x, runs)] if markers else None,
        )
        ok = ~np.isnan(stats_["low"])
        if ok.any():
            ax.fill_between(
                stats_["x"], stats_["low"], stats_["high"], where=ok, color=colour, alpha=0.2, linewidth=0
            )
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1.0, label=hline_label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n(mean, band: {confidence:.0%} t-interval over seeds)" if title else ""))
    return save_figure(fig, ax, path, legend=bool(curves))


HOUSE_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (selectable, editable)
}


def new_figure() -> tuple[Any, Any, list[str]]:
    """``(figure, axes, colours)`` in the house size, on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # 3.4 x 2.6 inches: a paper's column width, so 7-8 pt text stays readable when the figure is placed there
    matplotlib.rcParams.update(HOUSE_STYLE)
    fig, ax = plt.subplots(figsize=(3.4, 2.6), dpi=200)
    return fig, ax, plt.rcParams["axes.prop_cycle"].by_key()["color"]


def new_grid(
    rows: int, cols: int, *, width: float, height: float, sharex: bool = True
) -> tuple[Any, Any, list[str]]:
    """``(figure, axes[rows][cols], colours)`` in the house style: a multi-panel figure (``width`` x ``height``
    inches; 3.4 per column is a paper's column width)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(HOUSE_STYLE)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=200, sharex=sharex, squeeze=False)
    return fig, axes, plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save_grid(fig: Any, path: str | Path, handles: Sequence[Any], labels: Sequence[str]) -> Path:
    """Write a `new_grid` figure as PNG at ``path`` and PDF beside it, one legend for all panels below them."""
    import matplotlib.pyplot as plt

    fig.tight_layout()  # before the legend, which then extends the canvas below the panels
    if handles:
        fig.legend(list(handles), list(labels), loc="upper center", ncol=min(4, len(handles)), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return out


def save_figure(
    fig: Any, ax: Any, path: str | Path, *, legend: bool = True, grid_which: str = "major"
) -> Path:
    """Finish a figure of `new_figure` the house way and write it: the PNG at ``path`` and a vector PDF beside it
    (same stem). The legend goes below the axes, outside the data area, so it can never hide a curve."""
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3, which=grid_which)
    fig.tight_layout()  # before the legend: laid out around the axes alone, the legend then extends the canvas
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                      ncol=1 if len(handles) > 4 or max(map(len, labels)) > 28 else 2, frameon=False)  # fmt: skip
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return out


def _is_measured(x: float, runs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> bool:
    return any(any(abs(float(a) - x) < 1e-12 for a in xs) for xs, _ in runs)


# ---------------------------------------------------------------------------------------------------------------
# Text


def format_ci(ci: MeanCI | RateCI | EloCI | TrendCI | None, *, digits: int = 3, percent: bool = False) -> str:
    """``"0.512 [0.401, 0.623]"``; ``"0.512 (n=1)"`` when the interval is undefined; ``"–"`` for nothing."""
    if ci is None:
        return "–"
    value = getattr(ci, "mean", None)
    if value is None:
        value = getattr(ci, "rate", None)
    if value is None:
        value = getattr(ci, "elo", None)
    if value is None:
        value = ci.slope  # type: ignore[union-attr]

    def f(v: float) -> str:
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        if percent:
            return f"{100 * v:.{max(0, digits - 2)}f}%"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"

    if math.isnan(value):
        return "–"
    if math.isnan(ci.low) or math.isnan(ci.high):
        return f"{f(value)} (n={getattr(ci, 'n', getattr(ci, 'trials', '?'))})"
    return f"{f(value)} [{f(ci.low)}, {f(ci.high)}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A GitHub-markdown table. ``align`` is one char per column (``l``/``r``/``c``; default: left).

    Cells are ``str()``-ed; ``|`` and newlines in cells are escaped so they cannot break the table.
    """
    if any(len(r) != len(headers) for r in rows):
        raise ValueError("every row must have one cell per header")
    align = align or "l" * len(headers)
    if len(align) != len(headers):
        raise ValueError("align needs one character per column")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``) with the LaTeX specials of every cell escaped.

    Written here rather than with ``pandas.DataFrame.to_latex`` (which needs Jinja2 and a DataFrame for a table
    of already-formatted strings)."""
    if any(len(r) != len(headers) for r in rows):
        raise ValueError("every row must have one cell per header")
    align = align or "l" * len(headers)
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip

    def cell(v: Any) -> str:
        text = "".join(specials.get(ch, ch) for ch in str(v).replace("\n", " "))
        return text.replace("≥", r"$\geq$").replace("−", "-").replace("–", "--").replace("±", r"$\pm$")

    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(cell(h) for h in headers) + r" \\",
             r"\midrule"]  # fmt: skip
    lines += [" & ".join(cell(v) for v in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(
    directory: str | Path,
    name: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: str | None = None,
) -> str:
    """Write one table as ``<name>.md``, ``<name>.csv`` and ``<name>.tex`` under ``directory``; return the Markdown
    (for the report's text). The CSV holds the same formatted cells as the other two (``csv`` module quoting)."""
    import csv
    import io

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    md = markdown_table(headers, rows, align=align)
    (d / f"{name}.md").write_text(md + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[str(v) for v in r] for r in rows])
    (d / f"{name}.csv").write_text(buf.getvalue())
    (d / f"{name}.tex").write_text(latex_table(headers, rows, align=align))
    return md
