"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; more threads spin against the other tests sharing the cores.
    (A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
