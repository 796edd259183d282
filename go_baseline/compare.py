"""`go-baseline compare`: AlphaZero targets against outcome-only policy gradient at equal self-play games.

Reads the runs' ``metrics.jsonl`` (the ``kind: "eval"`` records the loop logs: win rate against fixed opponents
at a number of self-play games) and writes, in ``OUT``:

* ``report.md`` — a table per fixed opponent (random, GnuGo): final win rate with its 95 % Wilson interval
  (pooled over the runs of an arm), the Elo difference with its interval, the games played, and the first
  number of games at which the win rate reached 90 %; then the gradient-variance probe by game length;
* ``winrate_vs_games_<opponent>.png`` — win rate against self-play games for both arms (mean ± t-interval over
  runs, thin lines per run), using the shared :mod:`relabel_rl.report` helpers, as `llm-rl compare` does;
* ``summary.json`` — every number in the report.

Evaluations against earlier checkpoints (``previous``) measure progress within a run and are not comparable
across arms, so they are left out of the curves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from go_baseline.replay import ReplayBuffer
from go_baseline.train import latest_checkpoint, load_net
from go_baseline.variance import gradient_variance_probe
from relabel_rl.report import (
    elo_difference,
    first_crossing,
    format_ci,
    markdown_table,
    plot_mean_ci,
    wilson_interval,
)
from relabel_rl.rundir import read_metrics

__all__ = ["compare", "evaluate_curve"]

_CKPT_NAME = re.compile(r"^ckpt_\d+$")
CURVE_EVALS = "compare_evals.jsonl"


def evaluate_curve(
    run: Path, *, gnugo_level: int, games: int, every: int, num_simulations: int, seed: int = 0
) -> list[dict]:
    """Play each ``every``-th checkpoint of ``run`` (and the last) against GnuGo, colours alternating.

    Results are appended to ``run/compare_evals.jsonl`` (not the loop's ``metrics.jsonl``) as eval records, and
    checkpoints already evaluated there at the same settings are skipped, so a killed compare resumes.
    """
    from go_baseline.arena import GnuGoPlayer, NetPlayer, play_match
    from go_baseline.config import GoConfig
    from go_baseline.train import list_checkpoints
    from relabel_rl.config import load_config

    cfg = load_config(GoConfig, data=read_yaml(run / "config.yaml"))
    name = f"gnugo-L{gnugo_level}"
    done = {
        (r["iteration"], r.get("num_simulations"))
        for r in read_metrics(run / CURVE_EVALS)
        if r.get("opponent") == name
    }
    ckpts = list_checkpoints(run / "checkpoints")
    chosen = [c for i, c in enumerate(ckpts) if i % every == 0 or i == len(ckpts) - 1]
    out = []
    for ckpt in chosen:
        net, meta = load_net(ckpt)
        if (meta["iteration"], num_simulations) in done:
            continue
        me = NetPlayer(
            net,
            history=net.cfg.history,
            num_simulations=num_simulations,
            name=ckpt.stem,
            search=cfg.selfplay.search,
            max_considered=cfg.selfplay.max_considered,
            score_weight=cfg.selfplay.score_weight,
        )
        opp = GnuGoPlayer(gnugo_level, seed=seed)
        try:
            res = play_match(
                me,
                opp,
                games=games,
                board_size=cfg.board.size,
                komi=cfg.board.komi,
                sgf_dir=run / "sgf" / "compare",
                sgf_prefix=f"{ckpt.stem}_{name}",
                max_game_length=cfg.board.max_game_length,
                rules=cfg.eval.rules,
            )
        finally:
            opp.close()
        rec = {
            "kind": "eval",
            "iteration": meta["iteration"],
            "selfplay_games": meta["games"],
            "num_simulations": num_simulations,
            **res.summary(),
        }
        with open(run / CURVE_EVALS, "a") as f:
            f.write(json.dumps(rec, default=_json_default) + "\n")
        out.append(rec)
    return out


def _fixed_evals(run: Path) -> dict[str, list[dict]]:
    """Eval records of one run against fixed opponents, by opponent, in order of games."""
    out: dict[str, list[dict]] = {}
    records = read_metrics(run / "metrics.jsonl") + read_metrics(run / CURVE_EVALS)
    games_at = {0: 0, **{r["iteration"]: r["games"] for r in records if r.get("kind") == "train"}}
    for rec in records:
        if rec.get("kind") == "eval" and not _CKPT_NAME.match(str(rec.get("opponent", ""))):
            rec = dict(rec)
            # records of early versions lacked these two keys; both are recoverable
            rec.setdefault("selfplay_games", games_at.get(rec["iteration"], 0))
            rec.setdefault("eval_games", rec["wins"] + rec["losses"] + rec["draws"])
            if (
                "games_as_black" not in rec and "scores" in rec
            ):  # early records: colours alternated, black first
                for colour, start, sign in (("black", 0, 1), ("white", 1, -1)):
                    mine = [x for x in rec["scores"][start::2] if x is not None]
                    rec[f"games_as_{colour}"] = len(mine)
                    won = sum(1.0 if sign * x > 0 else 0.5 if x == 0 else 0.0 for x in mine)
                    rec[f"win_rate_as_{colour}"] = won / len(mine) if mine else 0.0
            out.setdefault(rec["opponent"], []).append(rec)
    for v in out.values():
        v.sort(key=lambda r: (r["selfplay_games"], r["iteration"]))
    return out


def _arm_rows(arm: str, runs: Sequence[Path], opponent: str) -> tuple[list[Any], dict[str, Any]]:
    finals = []
    curves = []
    crossings = []
    black_curves = []
    for run in runs:
        recs = _fixed_evals(run).get(opponent, [])
        if not recs:
            continue
        xs, ys = [r["selfplay_games"] for r in recs], [r["win_rate"] for r in recs]
        curves.append((xs, ys))
        black_curves.append((xs, [r.get("win_rate_as_black", float("nan")) for r in recs]))
        finals.append(recs[-1])
        crossings.append(first_crossing(xs, ys, 0.9))
    if not finals:
        return [arm, len(runs), "–", "–", "–", "–", "–"], {"runs": 0}
    wins = sum(r["wins"] for r in finals)
    draws = sum(r["draws"] for r in finals)
    n = sum(r["eval_games"] for r in finals)
    rate = wilson_interval(wins + 0.5 * draws, n)
    elo = elo_difference(wins, n, draws=draws)
    games = [r["selfplay_games"] for r in finals]
    reached = [c for c in crossings if c is not None]
    by_colour = []
    for colour in ("black", "white"):
        k = sum(r.get(f"games_as_{colour}", 0) for r in finals)
        w = sum(r.get(f"win_rate_as_{colour}", 0.0) * r.get(f"games_as_{colour}", 0) for r in finals)
        by_colour.append(f"{w / k:.0%} of {k}" if k else "–")
    row = [
        arm,
        len(curves),
        ", ".join(str(g) for g in games),
        format_ci(rate, percent=True),
        " / ".join(by_colour),
        format_ci(elo, digits=0),
        f"{min(reached):g}" if reached else f"not reached ({len(crossings)} runs)",
    ]
    summary = {
        "runs": len(curves),
        "final_games": games,
        "final_win_rate": rate.rate,
        "final_win_rate_ci95": [rate.low, rate.high],
        "final_eval_games": n,
        "elo": elo.elo,
        "elo_ci95": [elo.low, elo.high],
        "games_to_90pct": crossings,
        "curves": curves,
        "curves_as_black": black_curves,
    }
    return row, summary


_HEADERS = [
    "arm",
    "runs",
    "self-play games",
    "win rate [95% CI]",
    "as black / as white",
    "Elo [95% CI]",
    "games to 90%",
]
_INTRO = [
    "# Go: AlphaZero targets vs outcome-only policy gradient",
    "",
    "Both arms train the same network on the same number of self-play games. **AZ** learns from the search's "
    "visit distribution at every move; **PG** (REINFORCE) from one outcome per game. Win rates are against "
    "fixed opponents, colours alternating, with 95 % Wilson intervals pooled over runs; Elo is relative to "
    "the opponent. Games are counted under each run's `eval.rules` (Chinese by default: dead stones removed, "
    "by GnuGo's own verdict in games against GnuGo).",
    "",
]


def compare(
    az_runs: Sequence[str | Path],
    pg_runs: Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    probe_positions: int = 64,
    probe_games: int = 64,
    seed: int = 0,
    gnugo_level: int | None = None,
    gnugo_games: int = 10,
    gnugo_every: int = 8,
    gnugo_simulations: int = 8,
) -> Path:
    """Write the AZ-vs-PG report for the given run directories; returns the output directory.

    With ``gnugo_level``, every ``gnugo_every``-th checkpoint of every run (and its last) first plays
    ``gnugo_games`` games against GnuGo at that level (see :func:`evaluate_curve`), giving a second curve.
    """
    az = [Path(r) for r in az_runs]
    pg = [Path(r) for r in pg_runs]
    for r in (*az, *pg):
        if not (r / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{r} is not a go-baseline run directory (no metrics.jsonl)")
    out = Path(out_dir) if out_dir else az[0].parent / "compare"
    out.mkdir(parents=True, exist_ok=True)
    if gnugo_level is not None:
        from tqdm import tqdm

        for r in tqdm([*az, *pg], desc=f"GnuGo L{gnugo_level} curves"):
            evaluate_curve(
                r,
                gnugo_level=gnugo_level,
                games=gnugo_games,
                every=gnugo_every,
                num_simulations=gnugo_simulations,
                seed=seed,
            )
    summary: dict[str, Any] = {
        "az_runs": [str(r) for r in az],
        "pg_runs": [str(r) for r in pg],
        "opponents": {},
    }
    lines = list(_INTRO)
    for opp in sorted({o for r in (*az, *pg) for o in _fixed_evals(r)}):
        section, summary["opponents"][opp] = _opponent_section(opp, {"AZ": az, "PG": pg}, out)
        lines += section
    probe = _probe_section(az[0], probe_positions=probe_positions, probe_games=probe_games, seed=seed)
    if probe is not None:
        lines += probe[0]
        summary["variance_probe"] = probe[1]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return out


def _opponent_section(opp: str, arms: dict[str, list[Path]], out: Path) -> tuple[list[str], dict[str, Any]]:
    """The report's table and the two win-rate plots for one fixed opponent, and its summary by arm."""
    rows, per_arm = [], {}
    for arm, runs in arms.items():
        row, per_arm[arm] = _arm_rows(arm, runs, opp)
        rows.append(row)
    pngs = []
    for key, what in (("curves", "win rate"), ("curves_as_black", "win rate as black")):
        stem = "winrate" if key == "curves" else "winrate_as_black"
        pngs.append(
            plot_mean_ci(
                out / f"{stem}_vs_games_{opp}.png",
                {arm: s.get(key, []) for arm, s in per_arm.items() if s.get("runs")},
                xlabel="self-play games",
                ylabel=f"{what} vs {opp}",
                title=f"Go: {what} vs {opp} against self-play games",
                markers=True,
                ylim=(-0.02, 1.02),
                clip=(0.0, 1.0),
            )
        )
    lines = [
        f"## Against {opp}",
        "",
        markdown_table(_HEADERS, rows, align="lrrrrrr"),
        "",
        " ".join(f"![]({p.name})" for p in pngs),
        "",
    ]
    return lines, per_arm


def _probe_section(
    run: Path, *, probe_positions: int, probe_games: int, seed: int
) -> tuple[list[str], dict[str, Any]] | None:
    """The gradient-variance probe at ``run``'s latest checkpoint: report lines and numbers (None: no checkpoint)."""
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        return None
    net, meta = load_net(ckpt)
    cfg = json.loads(json.dumps(read_yaml(run / "config.yaml")))
    replay = ReplayBuffer(run / "games", int(cfg["train"]["window_games"]))
    probe = gradient_variance_probe(
        net,
        replay,
        num_positions=probe_positions,
        num_games=probe_games,
        komi=float(cfg["board"]["komi"]),
        value_weight=float(cfg["train"]["value_weight"]),
        seed=seed,
    )
    probe["checkpoint"] = str(ckpt)
    rows = []
    for arm in ("az", "pg"):
        p = probe[arm]
        for lab, b in p.get("by_game_length", {}).items():
            rows.append([arm.upper(), p["unit"], lab, b["samples"], _fmt(b["relative_variance"])])
        rows.append(
            [arm.upper(), p.get("unit", "–"), "all", p["samples"], _fmt(p.get("relative_variance", math.nan))]
        )
    lines = [
        "## Gradient-variance probe",
        "",
        f"At `{ckpt}` (step {meta.get('step')}, {meta.get('games')} games): relative variance "
        "E‖g − ḡ‖² / ‖ḡ‖² of single-sample gradients — one *position* for AZ (visit-count CE + value MSE), one "
        "*game* for PG (−z Σ log π over its moves) — binned by game length (moves).",
        "",
        markdown_table(["arm", "sample", "game length", "samples", "relative variance"], rows, align="lllrr"),
        "",
    ]
    return lines, probe


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
