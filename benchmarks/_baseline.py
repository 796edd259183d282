"""Helpers for `make bench`: time this tree against the code before a change, in one run, in subprocesses.

A benchmark script runs its measurement in a worker subprocess (``script --worker '<json>'``) whose
``PYTHONPATH`` points at one source tree: this checkout, or a baseline commit exported with ``git archive`` into a
temporary directory. Ours and the baseline alternate, so both see the same machine load; each worker prints one
JSON line. Workers import ``tree_search``/``go_baseline`` from their tree and must handle both APIs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "45d1726"  # main before the tree_search speed work of issue #14
_PACKAGES = ("tree_search", "go_baseline", "relabel_rl")


@contextmanager
def baseline_tree(rev: str) -> Iterator[Path | None]:
    """The packages at commit ``rev`` in a temporary directory, or ``None`` (with a printed reason)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", rev, *_PACKAGES],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        print(
            f"baseline {rev} not available ({e}; {detail.decode(errors='replace').strip()}): comparison skipped"
        )
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def run_worker(
    script: str | Path, code: Path, spec: dict[str, Any], *, timeout: float = 1800
) -> dict[str, Any]:
    """Run ``script --worker <spec>`` with ``code`` first on the import path; return its last JSON line."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker on {code} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
