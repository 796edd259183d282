"""The training loop of the hand-written arms: plumbing, not algorithm.

An arm (`llm_rl.arms.Arm`) supplies ``collect(examples, ctx) -> Batch`` and ``loss(batch, policy)``; this loop does
the rest the same way for every arm, so arms differ only in what they compute. Per batch:

1. the next ``optim.prompts_per_step`` training prompts (`PromptCursor`: a seeded shuffle per epoch of the task's
   train rows), as a `PromptBatch` that charges each prompt when the arm reads it;
2. ``collect`` with a `StepContext`: the policy (in eval mode, no gradients), the metered sampler and verifier,
   the batch's generator (the run's own stream in a single process with one chunk; else one seeded stream per
   chunk, `llm_rl.harness.distributed`), and the budget questions;
3. ``optim.epochs`` x ``optim.minibatches`` optimiser updates (AdamW via accelerate, gradients clipped to
   ``optim.max_grad_norm``): each epoch re-splits ``Batch.items`` into ``minibatches`` seeded random parts (one
   part, in order, when ``minibatches = 1``), and each update back-propagates the arm's loss of one part (of
   every chunk, the mean over chunks). After each update: a ``train`` record, the evaluation schedule, and a stop
   as soon as the budget is spent;
4. a checkpoint when the batch crossed a multiple of ``optim.checkpoint_every`` optimiser steps (always at a batch
   boundary, so a resumed run retraces the uninterrupted one exactly).

Why by hand rather than `transformers.Trainer`? The Trainer's unit is a fixed dataset epoch and its stop rule is a
step count; here the data is generated on-policy by the arm each batch and the stop rule is a budget counter the
arm's own spending moves. Accelerate supplies device handling, ``backward`` and gradient clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator

from llm_rl.arms.base import Arm, Batch
from llm_rl.generation import make_backend
from llm_rl.harness.checkpoints import (
    LoopCheckpoint,
    read_loop_checkpoint,
    restore_rng,
    rng_state,
    save_loop_checkpoint,
)
from llm_rl.harness.data import PromptCursor
from llm_rl.harness.distributed import (
    Layout,
    all_reduce_gradients,
    all_reduce_mean,
    barrier,
    chunk_seed,
    is_main,
    resolve_chunks,
    split_chunks,
)
from llm_rl.harness.metering import PromptBatch, StepContext
from llm_rl.harness.session import Session
from relabel_rl.rundir import seed_everything

__all__ = ["train_loop"]


def train_loop(arm: Arm, session: Session, policy: Any) -> dict[str, Any]:
    """Train ``policy`` with ``arm`` until the session's budget is spent (resuming from the run's newest good
    checkpoint); save ``final/``; return the final evaluation record (module docstring)."""
    loop = _Loop.build(arm, session, policy)
    last_eval = loop.resume()
    progress = session.progress()
    while not session.exhausted():
        last_eval = loop.batch(progress) or last_eval
    progress.close()
    if last_eval is None or last_eval["step"] != loop.step:
        last_eval = session.evaluate(loop.sampler, loop.step)  # the final evaluation
    loop.checkpoint()
    return session.finish(loop.policy, loop.step, last_eval)


@dataclass
class _Loop:
    """The moving parts of one run of the loop."""

    arm: Arm
    session: Session
    policy: Any
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    sampler: Any
    generator: torch.Generator
    cursor: PromptCursor
    chunks: int
    step: int = 0
    cfg: Any = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = self.session.cfg
        layout = Layout.current()
        self.my_chunks = list(range(layout.rank, self.chunks, layout.world))
        # One process with one chunk: the run's own generator stream (checkpointed), no chunk seeding.
        self.chunked = layout.world > 1 or self.chunks > 1
        self.updates = self.cfg.optim.epochs * self.cfg.optim.minibatches

    @classmethod
    def build(cls, arm: Arm, session: Session, policy: Any) -> _Loop:
        cfg = session.cfg
        seed_everything(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        cursor = PromptCursor(len(session.task.train), seed=cfg.seed)
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        params = [p for p in policy.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
        prepared, optimizer = accelerator.prepare(policy, optimizer)
        policy = accelerator.unwrap_model(prepared)
        sampler = make_backend(cfg.model.generation_backend, policy, session.budget)
        chunks = resolve_chunks(cfg.optim.prompts_per_step, cfg.optim.prompt_chunks, Layout.current().world)
        return cls(arm, session, policy, accelerator, optimizer, params, sampler, generator, cursor, chunks)

    # --- resume and checkpoints -----------------------------------------------------------------------------
    def resume(self) -> dict[str, Any] | None:
        """Restore the newest good checkpoint, if any; evaluate at step 0 when starting fresh."""
        found = self.session.find_checkpoint(read_loop_checkpoint)
        if found is None:
            self.session.begin(None)
            return self.session.evaluate(self.sampler, 0)
        ckpt: LoopCheckpoint = found[1]
        named = {n: p for n, p in self.policy.named_parameters() if p.requires_grad}
        if set(ckpt.trainable) != set(named):
            missing, extra = (
                sorted(set(named) - set(ckpt.trainable))[:3],
                sorted(set(ckpt.trainable) - set(named))[:3],
            )
            raise ValueError(
                f"checkpoint {ckpt.path} does not match the policy (missing {missing}, unexpected {extra})"
            )
        with torch.no_grad():
            for n, value in ckpt.trainable.items():
                named[n].copy_(value.to(named[n].device, named[n].dtype))
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.step = self.session.restore(ckpt.state)
        self.cursor.load_state_dict(ckpt.state["cursor"])
        restore_rng(self.generator, ckpt.rng, ckpt.state["rng"])
        return self.session.begin(self.step)

    def checkpoint(self) -> None:
        with self.session.budget.paused():
            state = self.session.state(self.step)  # collective
            tensors, rng_json = rng_state(self.generator)
            if is_main():
                save_loop_checkpoint(
                    self.session.run.checkpoint_dir,
                    self.step,
                    trainable={n: p for n, p in self.policy.named_parameters() if p.requires_grad},
                    optimizer=self.optimizer.state_dict(),
                    rng=tensors,
                    state={**state, "cursor": self.cursor.state_dict(), "rng": rng_json},
                )
            barrier()

    # --- one batch ------------------------------------------------------------------------------------------
    def batch(self, progress: Any) -> dict[str, Any] | None:
        """Collect one batch and train on it (module docstring); returns the last evaluation it ran, if any."""
        collected_at = self.step
        examples = [self.session.task.train[i] for i in self.cursor.next(self._batch_size())]
        last_eval = self._train_on(self._collect(examples), collected_at, progress)
        every = self.cfg.optim.checkpoint_every
        if self.step // every > collected_at // every:
            self.checkpoint()
        return last_eval

    def _train_on(
        self, batches: list[tuple[int, Batch]], collected_at: int, progress: Any
    ) -> dict[str, Any] | None:
        """The batch's ``epochs`` x ``minibatches`` updates, each logged and followed by the evaluation schedule;
        stops early once the budget is spent."""
        last_eval = None
        for epoch in range(self.cfg.optim.epochs):
            parts = [self._minibatches(b, collected_at, epoch, chunk) for chunk, b in batches]
            for m in range(self.cfg.optim.minibatches):
                record = {**self._update([p[m] for p in parts]), "epoch": epoch + 1, "minibatch": m + 1}
                self.session.log_train(self.step, record)
                progress.update(self.session.budget.value(self.cfg.budget.axis), loss=f"{record['loss']:.3f}")
                if self.session.eval_due():
                    last_eval = self.session.evaluate(self.sampler, self.step)
                if self.updates > 1 and self.session.exhausted():  # no update past the budget
                    return last_eval
        return last_eval

    def _batch_size(self) -> int:
        """``optim.prompts_per_step``; on the ``prompts`` axis the last batch takes only what the budget has left
        (rounded up to a whole number of chunks)."""
        size = self.cfg.optim.prompts_per_step
        if self.cfg.budget.axis == "prompts":
            left = self.cfg.budget.limit - self.session.budget.prompts
            size = min(size, math.ceil(left / self.chunks) * self.chunks)
        return size

    def _context(self, generator: torch.Generator) -> StepContext:
        return StepContext(
            policy=self.policy,
            sampler=self.sampler,
            verifier=self.session.verifier,
            generator=generator,
            updates_per_batch=self.updates,
            budget=self.session.budget,
            budget_cfg=self.cfg.budget,
        )

    def _collect(self, examples: list[dict]) -> list[tuple[int, Batch]]:
        """This process's batches: ``(chunk, Batch)`` for each of its chunks of the global batch."""
        budget = self.session.budget
        self.policy.eval()
        with torch.no_grad():
            if not self.chunked:
                batches = [
                    (0, self.arm.collect(PromptBatch(examples, budget), self._context(self.generator)))
                ]
            else:
                parts = split_chunks(examples, self.chunks)
                batches = []
                for c in self.my_chunks:
                    seed = chunk_seed(self.cfg.seed, self.step, c)
                    seed_everything(
                        seed
                    )  # the global RNGs too: a chunk's samples depend on (seed, step, c) alone
                    generator = torch.Generator().manual_seed(seed)
                    batches.append(
                        (c, self.arm.collect(PromptBatch(parts[c], budget), self._context(generator)))
                    )
        self.policy.train()
        return batches

    def _minibatches(self, batch: Batch, collected_at: int, epoch: int, chunk: int) -> list[Batch]:
        """``batch`` cut into ``optim.minibatches`` parts: itself when 1; else a random split seeded by (seed, step
        of collection, epoch, chunk), so it does not depend on the process layout."""
        count = self.cfg.optim.minibatches
        if count == 1:
            return [batch]
        seed = chunk_seed(self.cfg.seed, collected_at, 1_000_003 * (epoch + 1) + chunk)
        order = torch.randperm(len(batch.items), generator=torch.Generator().manual_seed(seed)).tolist()
        return [Batch([batch.items[i] for i in part], batch.stats) for part in _split(order, count)]

    def _update(self, parts: list[Batch]) -> dict[str, Any]:
        """One optimiser update on this process's ``parts`` (one per chunk): the mean of their losses, gradients
        summed over processes. Returns the loss, the gradient norm and the metrics (means over all chunks)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        loss_sum, any_grad = 0.0, 0
        for part in parts:
            if part.items:
                loss, loss_metrics = self.arm.loss(part, self.policy)
            else:  # an empty minibatch (fewer items than minibatches): nothing to learn
                loss, loss_metrics = torch.zeros(()), {}
            if loss.requires_grad:
                self.accelerator.backward(loss / self.chunks if self.chunked else loss)
                any_grad = 1
            loss_sum += float(loss.detach())
            for k, v in {**part.stats, **loss_metrics}.items():
                sums[k], counts[k] = sums.get(k, 0.0) + float(v), counts.get(k, 0) + 1
        if self.chunked:
            all_reduce_gradients(self.params)
            metrics, (loss_sum, any_grad) = all_reduce_mean(sums, counts, [loss_sum, float(any_grad)])
            loss_value = loss_sum / self.chunks
        else:
            metrics, loss_value = sums, loss_sum
        if any_grad > 0:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm))
        else:  # nothing to learn from this batch (e.g. every advantage is zero): the step is still taken
            grad_norm = 0.0
        self.optimizer.step()
        self.session.budget.optimizer_steps += 1
        self.session.sync.sync()  # every process now holds the global counters
        self.step += 1
        return {"loss": loss_value, "grad_norm": grad_norm, **metrics}


def _split(order: list[int], count: int) -> list[list[int]]:
    """``order`` in ``count`` contiguous parts whose sizes differ by at most one."""
    size, extra = divmod(len(order), count)
    parts, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        parts.append(order[start:end])
        start = end
    return parts
