"""Reading a comparison's runs back from disk: what the report is computed from.

Layout (written by `llm_rl.compare`, see `llm_rl.grid`)::

    OUTPUT_DIR/runs/<name>-seed<k>/                 one group
    OUTPUT_DIR/runs/<group>/<name>-seed<k>/         a sweep value (``length4``) or a warm-start target (``ws0.05``)

Each run directory holds ``config.yaml`` (the resolved config: ``arm``, ``task.feedback``, ``task.difficulty``),
``meta.json`` (the cell: variant name, overrides, sweep value, warm-start target), ``metrics.jsonl`` (its
``kind: "eval"`` records, each with the budget counters and the per-item results ``item_pass@1``) and, once
finished, ``final_metrics.json``. A run without ``config.yaml``/``meta.json`` (hand-made, or from an older version)
is read from its directory names alone, as the plain arm under ``outcome`` feedback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llm_rl.analysis.verdicts import ARM_LABELS
from relabel_rl.rundir import read_metrics
from relabel_rl.stats import interpolate_items

__all__ = ["RunRecord", "load_runs"]

_RUN_NAME = re.compile(r"^(?P<name>.+)-seed(?P<seed>-?\d+)$")
_WS_NAME = re.compile(r"^ws(?P<rate>[0-9.]+)$")
_GROUP_VALUE = re.compile(r"^(?P<knob>[A-Za-z_]+?)(?P<value>-?[0-9.]+)$")


@dataclass(frozen=True)
class RunRecord:
    """One run as read back from disk.

    Attributes:
      name: the variant's name (a plain arm's name), from the directory ``<name>-seed<k>``.
      arm: the arm it ran (``config.yaml``'s ``arm``).
      seed: from the directory name.
      group: its group folder (``length4``, ``ws0.05``) or None.
      warm_start: the warm-start target of the low-pass-rate regime, or None.
      sweep_value: the sweep value (``meta.json``; else parsed from the group folder), or None.
      feedback: ``task.feedback`` of its config (``outcome`` when not recorded).
      overrides: the variant's overrides (empty for a plain arm).
      path: the run directory.
      evals: its ``kind == "eval"`` records in logged order.
      final: ``final_metrics.json``; empty while the run is unfinished.
    """

    name: str
    arm: str
    seed: int
    group: str | None
    warm_start: float | None
    sweep_value: float | None
    feedback: str
    overrides: Mapping[str, Any]
    path: Path
    evals: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return bool(self.final)

    @property
    def has_items(self) -> bool:
        """Whether every evaluation kept its per-item results."""
        return bool(self.evals) and all(isinstance(e.get("item_pass@1"), list) for e in self.evals)

    def curve(self, axis: str, metric: str = "pass@1") -> tuple[list[float], list[float]]:
        pts = [
            (float(r[axis]), float(r[metric]))
            for r in self.evals
            if r.get(axis) is not None and r.get(metric) is not None
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    def last_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}

    def spend(self, axis: str) -> float | None:
        """The final spend on ``axis`` (final metrics, else the last evaluation)."""
        budget = self.final.get("budget") if isinstance(self.final.get("budget"), Mapping) else None
        for source in (budget or {}, self.final, self.last_eval()):
            if source.get(axis) is not None:
                return float(source[axis])
        return None

    def items(self, index: int, key: str = "item_pass@1") -> np.ndarray | None:
        """Per-item results of evaluation ``index`` (``-1``: the final one); ``item_successes / k`` for
        ``key="pass@k"``; the evaluation's pass@1 as a one-item row when per-item results were not kept."""
        if not self.evals:
            return None
        record = self.evals[index]
        if key == "pass@k":
            # with exactly k samples per item, an item's unbiased pass@k is 1 if any sample succeeded, else 0
            successes = record.get("item_successes")
            if isinstance(successes, list):
                return np.array([1.0 if c > 0 else 0.0 for c in successes])
            return None if record.get("pass@k") is None else np.array([float(record["pass@k"])])
        value = record.get(key)
        if isinstance(value, list):
            return np.asarray(value, dtype=float)
        return None if record.get("pass@1") is None else np.array([float(record["pass@1"])])

    def items_at_spend(self, axis: str, x: float) -> np.ndarray | None:
        """Per-item pass@1 at spend ``x`` on ``axis``, interpolated between evaluations (None beyond the run)."""
        pts = [(float(e[axis]), i) for i, e in enumerate(self.evals) if e.get(axis) is not None]
        if not pts or not pts[0][0] <= x <= pts[-1][0]:
            return None
        rows = [self.items(i) for _, i in pts]
        if any(r is None for r in rows) or len({r.shape for r in rows}) != 1:
            return None
        return interpolate_items([p for p, _ in pts], rows, x)

    @property
    def items_digest(self) -> str | None:
        digests = {e.get("items_digest") for e in self.evals}
        return digests.pop() if len(digests) == 1 else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _record(path: Path, group: str | None) -> RunRecord | None:
    m = _RUN_NAME.match(path.name)
    if not (path.is_dir() and m):
        return None
    cfg = _read_yaml(path / "config.yaml")
    cell = _read_json(path / "meta.json").get("cell") or {}
    ws = _WS_NAME.match(group or "")
    warm = cell.get("warm_target", float(ws["rate"]) if ws else None)
    sweep = (cell.get("sweep") or {}).get("value")
    if sweep is None and group and not ws and (g := _GROUP_VALUE.match(group)):
        sweep = float(g["value"])
    evals = [r for r in read_metrics(path / "metrics.jsonl") if r.get("kind") == "eval"]
    final = _read_json(path / "final_metrics.json")
    return RunRecord(
        name=str(cell.get("variant", m["name"])),
        arm=str(cfg.get("arm", cell.get("arm", m["name"]))),
        seed=int(m["seed"]),
        group=group,
        warm_start=None if warm is None else float(warm),
        sweep_value=None if sweep is None else float(sweep),
        feedback=str((cfg.get("task") or {}).get("feedback", "outcome")),
        overrides=dict(cell.get("overrides") or {}),
        path=path,
        evals=evals,
        final=final,
    )


def load_runs(output_dir: str | Path) -> list[RunRecord]:
    """Every run under ``output_dir/runs`` (finished or not), sorted by group, arm, name, seed."""
    root = Path(output_dir) / "runs"
    found: list[RunRecord] = []
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if _RUN_NAME.match(child.name):
            rec = _record(child, None)
            found += [rec] if rec else []
        else:
            found += [r for grand in sorted(child.iterdir()) if (r := _record(grand, child.name))]
    order = {name: i for i, name in enumerate(ARM_LABELS)}
    found.sort(
        key=lambda r: (
            r.warm_start if r.warm_start is not None else -1.0,
            r.sweep_value if r.sweep_value is not None else -1.0,
            order.get(r.arm, 99),
            r.arm,
            bool(r.overrides),
            r.name,
            r.seed,
        )
    )
    return found
