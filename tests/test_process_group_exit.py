"""A process of an ``accelerate launch`` destroys its process group on the way out, before interpreter
finalisation (`relabel_rl.environment.destroy_process_group_at_exit`): a gloo group left to finalisation now and
then aborted a process after a finished 2-process run (``terminate called without an active exception``).

A one-process gloo group stands in for a launch. The probe is an ``atexit`` hook registered *before* the one under
test, so it runs after it (hooks run last-in, first-out) and sees whether the group is still there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, sys
    import torch.distributed as dist
    from relabel_rl.environment import destroy_process_group_at_exit

    atexit.register(lambda: print("group at exit:", dist.is_initialized(), flush=True))
    if sys.argv[1] == "group":
        dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
        dist.barrier()
    destroy_process_group_at_exit()
    destroy_process_group_at_exit()  # registering twice is harmless
    if sys.argv[3] == "raise":
        raise SystemExit(3)
    """
)


def _run(tmp_path, group: str, end: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", SCRIPT, group, str(tmp_path / "store"), end]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("end", ["return", "raise"])
def test_the_group_is_destroyed_before_the_interpreter_ends(tmp_path, end):
    done = _run(tmp_path, "group", end)
    assert done.returncode == (0 if end == "return" else 3), done.stderr
    assert "group at exit: False" in done.stdout, done.stdout + done.stderr


def test_without_a_group_nothing_is_registered(tmp_path):
    done = _run(tmp_path, "none", "return")
    assert done.returncode == 0, done.stderr
    assert "group at exit: False" in done.stdout
