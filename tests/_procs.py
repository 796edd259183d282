"""Killing a whole `accelerate launch`: torchrun starts each worker in a session of its own, so killing the
launcher's process group leaves the workers running; a test of ``kill -9`` must kill every descendant."""

from __future__ import annotations

import contextlib
import subprocess

import psutil


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process it started, at once; wait until they are gone."""
    root = psutil.Process(proc.pid)
    family = [*root.children(recursive=True), root]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(family, timeout=30)
    proc.wait()
