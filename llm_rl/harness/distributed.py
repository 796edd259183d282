"""Multi-process semantics (``accelerate launch``): the few collectives the harness needs, in one place.

A run under ``accelerate launch --num_processes W`` must mean the same thing for every W, so that a 2-process run
reproduces a 1-process run with the same global batch (up to float summation order; tests/test_multiprocess*.py):

* **chunks, not ranks, are the unit of sampling** (hand-written arms). The global batch of ``optim.prompts_per_step``
  prompts is split into ``C`` equal chunks (``optim.prompt_chunks``; default one per process). Chunk ``c`` of step
  ``s`` is collected with a ``torch.Generator`` — and the global torch/NumPy/``random`` RNGs — seeded from
  ``(seed, s, c)`` alone (`chunk_seed`), and process ``r`` takes chunks ``r, r+W, ...`` (``W`` must divide ``C``).
  A chunk's samples therefore depend neither on the process that drew them nor on the rest of the batch.
* **the loss is the mean of the chunk losses.** Each process back-propagates ``loss_c / C`` for its chunks and the
  gradients are *summed* over processes (`all_reduce_gradients`: one all-reduce of a flat buffer). The sum is done
  here rather than by DDP's hooks because the arms run their forward passes on the unwrapped model (`Policy`
  methods), which DDP does not see. (An arm's loss normalises within its chunk, e.g. per token, so C is part of
  the experiment: compare runs with the same C.)
* **budget counters aggregate exactly.** Each process's metered resources charge its own `Budget`; `BudgetSync`
  all-reduces the *increments* since the last sync (int64 sums), so afterwards every process holds the exact
  global totals. ``optimizer_steps`` is the same everywhere (one global step); ``wall_time`` takes the maximum.
  Stop and evaluation decisions are made collectively (`any_true`, `broadcast`).
* **one writer.** Only the main process writes records, evaluates, checkpoints and prints (`is_main`,
  `main_print`); the others wait at a `barrier` or receive the main process's result by `broadcast`.

With one process every collective is a no-op.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import PartialState

from llm_rl.harness.budget import COUNTED, Budget
from relabel_rl.environment import destroy_process_group_at_exit

__all__ = [
    "BudgetSync",
    "Layout",
    "all_reduce_gradients",
    "all_reduce_mean",
    "any_true",
    "barrier",
    "broadcast",
    "chunk_seed",
    "is_main",
    "main_print",
    "process_state",
    "resolve_chunks",
    "split_chunks",
    "sum_counts",
]


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@dataclass(frozen=True)
class Layout:
    """Which process this is. ``world == 1`` (the default) is a plain single-process run."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Layout:
        """The layout of the initialised process group (accelerate initialises it), else single-process."""
        if _dist_ready():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_state() -> PartialState:
    """accelerate's ``PartialState`` for this launch (joins the process group under ``accelerate launch``).

    ``cpu`` must be passed on a CPU-only machine: a bare ``PartialState()`` there reports a single process even
    under a 2-process launch, and, being a singleton, would make every later ``Accelerator`` agree. The group
    it joins is destroyed on the way out of the process (`relabel_rl.environment.destroy_process_group_at_exit`).
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    destroy_process_group_at_exit()
    return state


def is_main() -> bool:
    """Whether this is the main process (always, without ``accelerate launch``)."""
    return Layout.current().is_main


def main_print(*args: Any, file: Any = None, **kwargs: Any) -> None:
    """``print`` on the main process only (so a report line appears once under ``accelerate launch``)."""
    if is_main():
        print(*args, file=file if file is not None else sys.stdout, **kwargs)


def barrier() -> None:
    if Layout.current().world > 1:
        torch.distributed.barrier()


def broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every process (collective)."""
    if Layout.current().world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def any_true(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (a collective decision)."""
    if Layout.current().world == 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def sum_counts(counts: dict[str, Any]) -> dict[str, Any]:
    """Integer counters (e.g. verifier failure counts) summed over processes; other values as given.
    Collective: every process calls it at the same point (keys may differ: the union is summed)."""
    layout = Layout.current()
    if layout.world == 1:
        return dict(counts)
    local = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
    gathered: list[Any] = [None] * layout.world
    torch.distributed.all_gather_object(gathered, sorted(local))
    keys = sorted({k for ks in gathered for k in ks})
    t = torch.tensor([local.get(k, 0) for k in keys], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return {**counts, **dict(zip(keys, (int(x) for x in t.tolist())))}


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of optimizer step ``step`` (independent of the process that collects it)."""
    h = 0x9E3779B97F4A7C15
    for part in (seed, step, chunk):
        h = (h ^ (int(part) + 0x632BE59BD9B4E019 + ((h << 6) & (2**64 - 1)) + (h >> 2))) & (2**64 - 1)
    return int(h % (2**63 - 1))


def split_chunks(items: Sequence[Any], chunks: int) -> list[list[Any]]:
    """``items`` in ``chunks`` contiguous equal parts (``len(items)`` must be a multiple of ``chunks``)."""
    if chunks < 1 or len(items) % chunks:
        raise ValueError(f"cannot split {len(items)} prompts into {chunks} equal chunks")
    size = len(items) // chunks
    return [list(items[i * size : (i + 1) * size]) for i in range(chunks)]


def resolve_chunks(prompts_per_step: int, prompt_chunks: int | None, world: int) -> int:
    """The number of chunks per step: ``prompt_chunks``, or one per process; validated against both."""
    chunks = world if prompt_chunks is None else int(prompt_chunks)
    if chunks < 1:
        raise ValueError(f"optim.prompt_chunks must be >= 1, got {chunks}")
    if chunks % world:
        raise ValueError(
            f"optim.prompt_chunks ({chunks}) must be a multiple of the number of processes ({world}): "
            "every process takes the same number of chunks"
        )
    if prompts_per_step % chunks:
        raise ValueError(
            f"optim.prompts_per_step ({prompts_per_step}) must be a multiple of optim.prompt_chunks ({chunks})"
        )
    return chunks


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum ``params``' gradients over processes, in one all-reduce of a flat buffer. A parameter no process has a
    gradient for keeps ``grad = None`` (so the optimizer skips it, as in a single process); one that only some
    processes have a gradient for counts as zeros on the others."""
    if Layout.current().world == 1:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    torch.distributed.all_reduce(has, op=torch.distributed.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    if not live:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in live]
    flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for p, g in zip(live, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


def all_reduce_mean(
    values: dict[str, float], counts: dict[str, int], extra: Sequence[float]
) -> tuple[dict[str, float], list[float]]:
    """Means of per-chunk metric sums over every process's chunks, and the sums of ``extra`` values.

    ``values[k]`` is this process's sum of metric ``k`` over its chunks, ``counts[k]`` how many chunks reported it
    (a chunk with nothing to learn may report fewer metrics: the union of keys is used). Collective."""
    layout = Layout.current()
    keys = sorted(values)
    if layout.world > 1:
        gathered: list[Any] = [None] * layout.world
        torch.distributed.all_gather_object(gathered, keys)
        keys = sorted({k for ks in gathered for k in ks})
    local = torch.tensor(
        [*extra, *[values.get(k, 0.0) for k in keys], *[counts.get(k, 0) for k in keys]], dtype=torch.float64
    )
    if layout.world > 1:
        torch.distributed.all_reduce(local, op=torch.distributed.ReduceOp.SUM)
    flat = local.tolist()
    head, n = len(extra), len(keys)
    means = {k: flat[head + i] / flat[head + n + i] for i, k in enumerate(keys) if flat[head + n + i] > 0}
    return means, flat[:head]


class BudgetSync:
    """Make every process's `Budget` hold the exact global totals (module docstring)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.reset()

    def reset(self) -> None:
        """Take the current counters as already global (after a resume restored them on every process)."""
        self._synced = {k: getattr(self.budget, k) for k in COUNTED}

    def sync(self) -> None:
        """Collective: sum every process's increments since the last sync; wall time is the slowest process's."""
        if Layout.current().world == 1:
            return
        delta = torch.tensor([getattr(self.budget, k) - self._synced[k] for k in COUNTED], dtype=torch.int64)
        torch.distributed.all_reduce(delta, op=torch.distributed.ReduceOp.SUM)
        for k, d in zip(COUNTED, delta.tolist()):
            setattr(self.budget, k, self._synced[k] + int(d))
        self.reset()
        self.budget.tick()
        wall = torch.tensor([self.budget.wall_time], dtype=torch.float64)
        torch.distributed.all_reduce(wall, op=torch.distributed.ReduceOp.MAX)
        self.budget.add_wall_time(float(wall) - self.budget.wall_time)
