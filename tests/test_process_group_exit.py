"""Entry points under ``accelerate launch`` end in order: after a command succeeds, every process waits for the
others and the process group is destroyed (`relabel_rl.environment.close_process_group`), rather than each
process tearing gloo down in interpreter shutdown, which now and then aborted one of them after a finished run.
A failed command leaves the group alone: waiting at a barrier for a process that has died would hang.

A one-process gloo group stands in for a launch (the barrier is then immediate).
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from llm_rl.commands import module_main
from relabel_rl.environment import close_process_group


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_closing_without_a_group_does_nothing():
    assert not dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()


def test_a_successful_command_destroys_the_group(group):
    assert module_main(lambda argv: 0, []) == 0
    assert not dist.is_initialized()


def test_a_failed_command_leaves_the_group_alone(group):
    assert module_main(lambda argv: 2, []) == 2
    assert dist.is_initialized()
