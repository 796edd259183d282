"""Where a run's records go, and its progress bar: one implementation for every arm.

`RunLogger.log` appends each record to the run's ``metrics.jsonl`` (flushed, so a killed run keeps everything it
measured) and sends the same record to the trackers named in ``logging.report_to`` — TensorBoard, Weights &
Biases, Trackio — through accelerate's tracker classes (`accelerate.tracking`: the ``GeneralTracker`` interface
``Accelerator.init_trackers``/``log`` drive). The trackers are built here rather than by an ``Accelerator`` because
GRPO's ``Accelerator`` belongs to TRL's trainer: a second one would re-initialise accelerate's shared state, and
one logger must serve both the hand-written loop and the TRL bridge.

A record becomes tracker scalars named ``<kind>/<key>`` (``train/loss``, ``eval/pass@1``, nested dicts as
``eval/verifier_stats/calls``) at the record's ``step``; strings and booleans stay in ``metrics.jsonl`` only.
Only the main process writes anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
from tqdm.auto import tqdm

from llm_rl.harness.distributed import is_main
from relabel_rl.config import ConfigError, config_to_dict
from relabel_rl.rundir import RunDir

__all__ = ["Progress", "RunLogger", "check_trackers", "tracker_scalars"]

TRACKERS_DIR = "trackers"


def check_trackers(report_to: list[str]) -> None:
    """Refuse a tracker whose package is not installed, before any work (naming the key)."""
    available = {str(t) for t in get_available_trackers()}
    for i, name in enumerate(report_to):
        if name not in available:
            raise ConfigError(
                f"'logging.report_to[{i}]' = {name!r}: its package is not installed (pip install {name})"
            )


def tracker_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``record`` as ``<kind>/<key>`` scalars (module docstring)."""
    kind = str(record.get("kind", "record"))
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    for key, value in record.items():
        if key not in ("kind", "step"):
            walk(f"{kind}/{key}", value)
    return out


def _flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config as flat ``section.key`` hyper-parameters of the types trackers accept."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat_config(v, f"{prefix}{k}."))
        return out
    value = tree if isinstance(tree, bool | int | float | str) or tree is None else str(tree)
    return {prefix.rstrip("."): value}


class RunLogger:
    """The run's record sink: ``metrics.jsonl`` plus the ``logging.report_to`` trackers (module docstring)."""

    def __init__(self, run: RunDir, cfg: Any) -> None:
        self.run = run
        self.trackers: list[Any] = []
        if not is_main():
            return
        for name in cfg.logging.report_to:
            tracker_cls = LOGGER_TYPE_TO_CLASS[name]
            kwargs = {} if name == "tensorboard" else {"name": run.path.name}
            if tracker_cls.requires_logging_directory:
                tracker = tracker_cls(cfg.logging.project, run.path / TRACKERS_DIR, **kwargs)
            else:
                tracker = tracker_cls(cfg.logging.project, **kwargs)
            tracker.start()
            tracker.store_init_configuration(_flat_config(config_to_dict(cfg)))
            self.trackers.append(tracker)

    def log(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (main process only)."""
        if not is_main():
            return
        self.run.log(record)
        if self.trackers:
            scalars = tracker_scalars(record)
            step = record.get("step")
            for tracker in self.trackers:
                tracker.log(scalars, step=int(step) if isinstance(step, int | float) else None)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


class Progress:
    """A progress bar over the budget axis (main process only; ``enabled=False`` hides it)."""

    def __init__(
        self, *, limit: float, axis: str, desc: str, start: float = 0.0, enabled: bool = True
    ) -> None:
        self.limit = float(limit)
        unit = {"generated_tokens": "tok", "total_tokens": "tok", "prefill_tokens": "tok", "wall_time": "s"}
        self.bar = tqdm(
            total=self.limit,
            initial=min(self.limit, start),
            desc=desc,
            unit=unit.get(axis, axis.split("_")[0]),
            disable=not (enabled and is_main()),
            dynamic_ncols=True,
            leave=False,
        )

    def update(self, spent: float, **postfix: str) -> None:
        self.bar.n = min(self.limit, spent)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
