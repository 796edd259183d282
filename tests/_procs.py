"""Starting and killing ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo), for the 2-process tests,
and comparing what two runs wrote.

torchrun starts each worker in a session of its own, so killing the launcher's process group leaves the
workers running: a test of ``kill -9`` must kill every descendant (`kill_tree`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def launch_env() -> dict[str, str]:
    """The environment of a launch: CPU, one thread, offline, and ``tests/`` importable (test verifiers)."""
    path = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": path,
    }


def launch(args: list[str]) -> subprocess.Popen:
    """``accelerate launch`` of ``args`` (a script or ``-m module`` and its arguments) on ``WORLD`` processes."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(WORLD),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        *args,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process it started, at once; wait until they are gone."""
    root = psutil.Process(proc.pid)
    family = [*root.children(recursive=True), root]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(family, timeout=30)
    proc.wait()


def assert_same_records(got: list[dict], want: list[dict], *, skip: set[str], tol: float = 1e-5) -> None:
    """The same records in the same order with the same keys; floats equal to ``tol`` (relative), everything
    else exactly, keys in ``skip`` (timings) not compared."""
    assert [(r["kind"], r.get("step")) for r in got] == [(r["kind"], r.get("step")) for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (w["kind"], w.get("step"), g.keys() ^ w.keys())
        for k, v in w.items():
            if k in skip:
                continue
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=tol, abs=1e-7), (w["kind"], w.get("step"), k)
            else:
                assert g[k] == v, (w["kind"], w.get("step"), k, g[k], v)


def kill_at_first_checkpoint(proc: subprocess.Popen, run: Path, *, timeout: float = 180) -> None:
    """Wait until ``run`` has a checkpoint, then ``kill -9`` the launch (fails the test if it ends first)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not list((run / "checkpoints").glob("checkpoint-*[0-9]")):
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed:\n" + proc.stdout.read()[-3000:])
        time.sleep(0.02)
    kill_tree(proc)
