"""The run-directory convention shared by every entry point (LLM arms, `compare`, Go).

A run directory is the unit of reproducibility. It holds:

* ``config.yaml`` — the *resolved* config (recipe + overrides + defaults), reloadable with ``load_config``;
* ``meta.json``  — package versions, git sha (and whether the tree was dirty), seeds, command line, host, start time;
* ``metrics.jsonl`` — one JSON object per line, appended and flushed as the run goes, so a killed run keeps
  everything it measured; each record carries the ``step`` it belongs to;
* ``checkpoints/`` — whatever the entry point saves to resume from.

Re-opening an existing run directory (``resume=True``) keeps ``metrics.jsonl`` and checks that the resolved config
is the same, so a resumed run cannot silently continue a different experiment; the error names every key that
differs, with its recorded and its current value (:func:`check_same_config`, also for shared directories such as a
warm start: :func:`pin_config`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from relabel_rl.config import ConfigError, config_to_dict

__all__ = [
    "RunDir",
    "check_same_config",
    "config_differences",
    "git_sha",
    "jsonable",
    "newest_readable",
    "package_versions",
    "pin_config",
    "read_metrics",
    "seed_everything",
]

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
            check_same_config(cfg_file, cfg_dict, what=f"run directory {p} holds a run")
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
        for k in sorted(set(a) | set(b), key=str):
            yield from _diff_keys(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


_ABSENT = object()


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(jsonable(value))
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(recorded: Any, current: Any) -> list[str]:
    """``"'optim.learning_rate': 0.001 recorded, 0.002 now"`` for every dotted key whose value differs."""
    old, new = config_to_dict(recorded), config_to_dict(current)
    return [
        f"'{key}': {_shown(_lookup(old, key))} recorded, {_shown(_lookup(new, key))} now"
        for key in _diff_keys(old, new)
    ]


def check_same_config(cfg_file: str | Path, config: Any, *, what: str) -> None:
    """Refuse to continue work recorded in ``cfg_file`` with a different ``config``, naming every key that differs.

    ``what`` starts the message (``"run directory runs/x holds a run"``). Use it for any directory whose contents
    depend on a config: a run directory (:meth:`RunDir.create` calls it), a shared warm start, a cache.

    Raises:
      ConfigError: the recorded config differs (or cannot be read); the message lists each differing key with
        its recorded and its current value.
    """
    cfg_file = Path(cfg_file)
    try:
        recorded = yaml.safe_load(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(
            f"{what}, but its {cfg_file} cannot be read ({type(e).__name__}); move it away"
        ) from None
    differences = config_differences(recorded, config)
    if differences:
        shown = "; ".join(differences[:8]) + (
            f"; and {len(differences) - 8} more" if len(differences) > 8 else ""
        )
        raise ConfigError(
            f"{what} with a different config ({len(differences)} key(s) differ: {shown}); "
            "use a new directory to start a different run, or the recorded values to continue it"
        )


def pin_config(directory: str | Path, config: Any, *, what: str = "directory") -> None:
    """Record ``config`` as ``directory/config.yaml``, or check it against the one recorded there.

    For directories that several runs share (``OUTPUT_DIR/warm_start/``): the first run pins the config the
    contents were made with; a later run with different values is refused, naming the keys, instead of silently
    rebuilding (and overwriting) what the first run started from.

    Raises:
      ConfigError: via :func:`check_same_config`.
    """
    d = Path(directory)
    cfg_file = d / "config.yaml"
    if cfg_file.exists():
        check_same_config(cfg_file, config, what=f"{what} {d} was made")
        return
    d.mkdir(parents=True, exist_ok=True)
    tmp = cfg_file.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    tmp.replace(cfg_file)


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


def newest_readable(
    candidates: Sequence[Path],
    read: Callable[[Path], Any],
    *,
    errors: type[Exception] | tuple[type[Exception], ...],
    warn: Callable[[str], None] = print,
) -> tuple[Path, Any] | None:
    """The first of ``candidates`` (newest first) that ``read`` accepts, with what it read; None when none does.

    The fall-back every resumable run shares (LLM arms and Go): a checkpoint whose ``read`` raises one of
    ``errors`` is renamed ``<name>.corrupt`` (a file or a directory; kept for inspection, never picked again) and
    reported by ``warn`` in one line naming the file and what the run falls back to.
    """
    for i, path in enumerate(candidates):
        try:
            return path, read(path)
        except errors as e:
            older = candidates[i + 1].name if i + 1 < len(candidates) else "the start of training"
            aside = path.with_name(path.name + ".corrupt")
            if aside.is_dir():
                shutil.rmtree(aside)
            path.replace(aside)
            warn(f"warning: checkpoint unusable: {e}; moved to {aside.name}, falling back to {older}")
    return None
