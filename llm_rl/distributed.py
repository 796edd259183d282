"""Multi-process training steps (``accelerate launch``) whose results do not depend on the number of processes.

The hand-written arms (relabel, mc_value) take one optimizer step per *global* batch of ``optim.prompts_per_step``
prompts. Under ``accelerate launch --num_processes W`` this module makes that step mean the same thing for every
W, so that a 2-process run reproduces a 1-process run with the same global batch (up to float summation order):

* **chunks, not ranks, are the unit of sampling.** The global batch is split into ``C`` equal chunks
  (``optim.prompt_chunks``; default: one per process). Chunk ``c`` of step ``s`` is collected with a
  ``torch.Generator`` — and the global torch/NumPy/``random`` RNGs — seeded from ``(seed, s, c)`` alone, and the
  processes share the chunks round-robin (process ``r`` takes chunks ``r, r+W, ...``; ``W`` must divide ``C``).
  A chunk's samples therefore do not depend on which process drew them, nor on what else was in its batch.
* **the loss is the mean of the chunk losses.** Each process back-propagates ``loss_c / C`` for its chunks; the
  gradients are then *summed* over processes (one all-reduce of a flat buffer), giving ``(1/C) sum_c grad
  loss_c`` on every process — what one process computes by looping over all C chunks. (The arms' own losses
  normalise within a batch, e.g. per token, so C is part of the experiment: compare runs with the same C.)
  The sum is done here rather than by DDP's hooks because the arms run their forward passes on the unwrapped
  model (`Policy` methods), which DDP does not see.
* **budget counters aggregate exactly.** Each process counts what it spent into its own `Budget`; `BudgetSync`
  all-reduces the *increments* since the last sync (int64 sums for tokens and verifier calls), so after a sync
  every process holds the exact global totals. ``optimizer_steps`` is the same on every process (one global
  step) and is not summed; ``wall_time`` takes the maximum. The stop decision is made collectively.

With one process (plain ``python -m``) every collective is skipped and the step is the same loop over chunks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm_rl.budget import Budget

__all__ = [
    "BudgetSync",
    "ChunkedStep",
    "Layout",
    "LoopDistribution",
    "all_reduce_gradients",
    "chunk_seed",
    "process_state",
    "split_chunks",
    "sum_counts",
]

_SUMMED = ("generated_tokens", "prefill_tokens", "verifier_calls")


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

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def process_state() -> Any:
    """accelerate's ``PartialState`` for this launch (joins the process group under ``accelerate launch``).

    ``cpu`` must be passed on a CPU-only machine: a bare ``PartialState()`` there reports a single process even
    under a 2-process launch, and, being a singleton, would make every later ``Accelerator`` agree.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def sum_counts(counts: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Integer counters (e.g. verifier call/failure stats) summed over processes; other values as given.
    Collective: every process must call it at the same point with the same keys."""
    layout = layout or Layout.current()
    if layout.world == 1:
        return dict(counts)
    keys = sorted(k for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool))
    t = torch.tensor([counts[k] for k in keys], dtype=torch.int64)
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


def seed_all(seed: int) -> torch.Generator:
    """Seed the global torch, NumPy and ``random`` RNGs from ``seed`` and return a generator seeded with it."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], layout: Layout) -> None:
    """Sum ``params``' gradients over processes, in one all-reduce of a flat buffer. A parameter no process has a
    gradient for keeps ``grad = None`` (so the optimizer skips it, as in a single process); one that only some
    processes have a gradient for counts as zeros on the others."""
    if layout.world == 1:
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


class BudgetSync:
    """Make every process's `Budget` hold the exact global totals (module docstring)."""

    def __init__(self, budget: Budget, layout: Layout) -> None:
        self.budget, self.layout = budget, layout
        self._synced = {k: getattr(budget, k) for k in _SUMMED}

    def reset(self) -> None:
        """Take the current counters as already global (after a resume restored them on every process)."""
        self._synced = {k: getattr(self.budget, k) for k in _SUMMED}

    def sync(self) -> None:
        if self.layout.world == 1:
            return
        delta = torch.tensor([getattr(self.budget, k) - self._synced[k] for k in _SUMMED], dtype=torch.int64)
        torch.distributed.all_reduce(delta, op=torch.distributed.ReduceOp.SUM)
        for k, d in zip(_SUMMED, delta.tolist()):
            setattr(self.budget, k, self._synced[k] + int(d))
        self._synced = {k: getattr(self.budget, k) for k in _SUMMED}
        self.budget.tick()
        wall = torch.tensor([self.budget.wall_time], dtype=torch.float64)
        torch.distributed.all_reduce(wall, op=torch.distributed.ReduceOp.MAX)
        self.budget._wall_at_start += float(wall) - self.budget.wall_time
        self.budget.tick()

    def any_true(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (a collective stop decision)."""
        if self.layout.world == 1:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())


Collect = Callable[[list[dict], Any, Any, torch.Generator], Any]
LossFn = Callable[[Any, Any], tuple[torch.Tensor, dict[str, float]]]


class ChunkedStep:
    """One global optimizer step's collect + loss + backward, split into seeded chunks (module docstring).

    Args:
      seed: the run seed (``cfg.seed``).
      chunks: chunks per step (`resolve_chunks`).
      layout: this process's rank and the world size.
      backward: how to back-propagate a loss (``accelerator.backward``; default ``loss.backward()``).
    """

    def __init__(
        self,
        *,
        seed: int,
        chunks: int,
        layout: Layout | None = None,
        backward: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        self.seed, self.chunks = int(seed), int(chunks)
        self.layout = layout or Layout.current()
        if self.chunks % self.layout.world:
            raise ValueError(f"{self.chunks} chunks cannot be shared evenly by {self.layout.world} processes")
        self._backward = backward or (lambda loss: loss.backward())

    def my_chunks(self, num_prompts: int) -> list[int]:
        """The chunk indices this process collects."""
        return list(range(self.layout.rank, self.chunks, self.layout.world))

    def run(
        self,
        step: int,
        examples: Sequence[dict],
        policy: Any,
        backend: Any,
        *,
        collect: Collect,
        loss_fn: LossFn,
        params: Sequence[torch.nn.Parameter],
    ) -> tuple[float, dict[str, float], bool]:
        """Collect and back-propagate this process's chunks of ``examples`` (the whole global batch, the same on
        every process), then sum gradients over processes. Returns ``(loss, metrics, has_gradient)``: the mean
        chunk loss and the mean of each chunk metric over all chunks (identical on every process), and whether
        any chunk's loss carried a gradient."""
        parts = split_chunks(examples, self.chunks)
        loss_sum, any_grad = 0.0, 0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for c in self.my_chunks(len(examples)):
            generator = seed_all(chunk_seed(self.seed, step, c))
            policy.eval()
            items = collect(parts[c], policy, backend, generator)
            policy.train()
            loss, metrics = loss_fn(items, policy)
            if loss.requires_grad:
                self._backward(loss / self.chunks)
                any_grad = 1
            loss_sum += float(loss.detach())
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        all_reduce_gradients(params, self.layout)
        keys = sorted(sums)
        if self.layout.world > 1:  # a chunk with nothing to learn may report fewer metrics: use the union
            gathered: list[Any] = [None] * self.layout.world
            torch.distributed.all_gather_object(gathered, keys)
            keys = sorted({k for ks in gathered for k in ks})
        local = torch.tensor(
            [loss_sum, float(any_grad), *[sums.get(k, 0.0) for k in keys], *[counts.get(k, 0) for k in keys]],
            dtype=torch.float64,
        )
        if self.layout.world > 1:
            torch.distributed.all_reduce(local, op=torch.distributed.ReduceOp.SUM)
        values = local.tolist()
        n = len(keys)
        metrics_mean = {
            k: values[2 + i] / values[2 + n + i] for i, k in enumerate(keys) if values[2 + n + i] > 0
        }
        return values[0] / self.chunks, metrics_mean, values[1] > 0


class LoopDistribution:
    """What `llm_rl.loop.run_training` needs to run under ``accelerate launch``, in one object.

    ``active`` is False for a single process with one chunk per step: the loop then takes its plain path (one
    ``collect`` over the whole batch with the run's generator stream), exactly as before this module existed.
    Otherwise every step goes through `ChunkedStep`; counters are synced after each step; the stop decision is
    collective; only the main process logs, evaluates, checkpoints and saves, and the others wait for it.

    Args:
      seed: the run seed.
      prompts_per_step: the global batch.
      prompt_chunks: ``optim.prompt_chunks`` (None: one chunk per process).
      budget: the run's counters (each process's own object).
      backward: ``accelerator.backward``.
    """

    def __init__(
        self,
        *,
        seed: int,
        prompts_per_step: int,
        prompt_chunks: int | None,
        budget: Budget,
        backward: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        self.layout = Layout.current()
        self.chunks = resolve_chunks(prompts_per_step, prompt_chunks, self.layout.world)
        self.active = self.layout.world > 1 or self.chunks > 1
        self.sync = BudgetSync(budget, self.layout)
        self.stepper = ChunkedStep(seed=seed, chunks=self.chunks, layout=self.layout, backward=backward)

    @property
    def is_main(self) -> bool:
        return self.layout.is_main

    def exhausted(self, budget: Budget, cfg: Any) -> bool:
        """``budget.exhausted(cfg)``, decided together (a wall-time budget may tick past on one process first)."""
        return self.sync.any_true(budget.exhausted(cfg))

    def barrier(self) -> None:
        self.layout.barrier()

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process."""
        if self.layout.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum_counts(self, counts: dict[str, Any]) -> dict[str, Any]:
        """`sum_counts` over this loop's processes."""
        return sum_counts(counts, self.layout)
