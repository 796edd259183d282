"""The run-directory convention shared by every entry point (LLM arms, `compare`, Go).

A run directory is the unit of reproducibility. It holds:

* ``config.yaml`` — the *resolved* config (recipe + overrides + defaults), reloadable with ``load_config``;
* ``meta.json``  — package versions, git sha (and whether the tree was dirty), seeds, command line, host, start time;
* ``metrics.jsonl`` — one JSON object per line, appended and flushed as the run goes, so a killed run keeps
  everything it measured; each record carries the ``step`` it belongs to;
* ``checkpoints/`` — whatever the entry point saves to resume from.

Re-opening an existing run directory (``resume=True``) keeps ``metrics.jsonl`` and checks that the resolved config
is the same, so a resumed run cannot silently continue a different experiment.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from relabel_rl.config import ConfigError, config_to_dict

__all__ = ["RunDir", "git_sha", "jsonable", "package_versions", "read_metrics", "seed_everything"]

TRACKED_PACKAGES = (
    "relabel-rl",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "open_spiel",
    "math-verify",
    "numpy",
    "vllm",
)


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None when a package is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def git_sha(path: str | Path | None = None) -> dict[str, Any]:
    """``{"sha": ..., "dirty": bool}`` of the git checkout holding ``path`` (the package by default)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that the same seed on CPU gives the same metrics."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON data: the one conversion every file relabel-rl writes goes through.

    Mappings get string keys, tuples become lists, NumPy/torch scalars become Python numbers, paths become
    strings, and a float that is not finite (NaN, +inf, -inf) becomes ``null``: strict JSON has no spelling for
    them, and a numeric column that holds a string ("inf") or a made-up number (1e308) misleads a reader more
    than a missing value does. (An infinite value in these files is always a degenerate statistic, e.g. the SNR
    of identical estimates.)
    """
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return jsonable(x.item())
    if isinstance(x, Path):
        return str(x)
    return x


@dataclass
class RunDir:
    """An open run directory. Create with :meth:`create`; append metrics with :meth:`log`."""

    path: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        config: Any,
        seeds: Mapping[str, int] | None = None,
        resume: bool = True,
        extra_meta: Mapping[str, Any] | None = None,
    ) -> RunDir:
        """Create (or re-open, when ``resume`` and the config matches) the run directory at ``path``.

        Raises:
          ConfigError: when re-opening a directory whose recorded config differs from ``config``, or when the
            directory holds a run and ``resume`` is False.
        """
        p = Path(path)
        cfg_dict = config_to_dict(config)
        cfg_file = p / "config.yaml"
        if cfg_file.exists():
            if not resume:
                raise ConfigError(f"run directory {p} already holds a run; pass a new directory or resume")
            old = yaml.safe_load(cfg_file.read_text())
            if old != cfg_dict:
                diff = sorted(_diff_keys(old, cfg_dict))
                raise ConfigError(
                    f"run directory {p} holds a run with a different config (keys differ: {', '.join(diff[:8])}); "
                    "use a new directory to start a different run"
                )
        p.mkdir(parents=True, exist_ok=True)
        (p / "checkpoints").mkdir(exist_ok=True)
        cfg_file.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
        meta_file = p / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        sessions = meta.get("sessions", [])
        sessions.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "argv": sys.argv,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "git": git_sha(),
                "versions": package_versions(),
            }
        )
        meta.update({"seeds": dict(seeds or {}), "sessions": sessions, **dict(extra_meta or {})})
        meta_file.write_text(json.dumps(jsonable(meta), indent=2))
        return cls(p)

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one metrics record (a flat or nested dict) to ``metrics.jsonl``, flushed to disk."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON atomically (temp file + rename) under the run directory."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(jsonable(obj), indent=2))
        tmp.replace(target)
        return target


def _diff_keys(a: Any, b: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl``; a torn last line (a run killed mid-write) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
