"""The shared outer loop of the hand-written arms (relabel, mc_value): plumbing, not algorithm.

An arm supplies two functions and the loop does the rest the same way for both, so that the arms differ only in
what they compute:

* ``collect(examples, policy, backend, generator) -> items`` — spend budget (generate, verify) on a batch of
  ``optim.prompts_per_step`` training prompts. ``backend.budget`` is the run's `Budget`: the backend counts
  tokens; the arm adds its verifier calls there.
* ``loss_fn(items, policy) -> (loss, metrics)`` — the differentiable training loss of those items.

The loop owns: the task data (`load_task`: the same train/test rows for every arm and seed), the prompt cursor
(a seeded shuffle per epoch), the optimiser (AdamW from ``optim``, via accelerate), the budget stop, metrics
records, evaluation at step 0, at every ``budget.eval_every`` crossing and at the end (`llm_rl.evaluate`; its time
is excluded from ``wall_time``), checkpoints and resume, and the final policy in ``run.path / "final"``.

Why by hand rather than `transformers.Trainer`? The Trainer's unit is a fixed dataset epoch and its stop rule is a
step count; here the data is generated on-policy by the arm each step and the stop rule is a budget counter the
arm's own spending moves. Accelerate supplies the device handling, ``backward`` and gradient clipping.

Checkpoints (every ``optim.checkpoint_every`` optimizer steps) hold the trainable parameters (the whole LM, or
the LoRA adapter, plus the value head), the optimizer state, the budget counters, the cursor, the step, the
eval schedule and every RNG state, written to a temporary directory and renamed into ``checkpoints/last``. A
killed run resumes from there; metrics records the killed session wrote after that checkpoint are dropped, so a
resumed run's ``metrics.jsonl`` matches an uninterrupted one (up to wall time).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llm_rl.budget import Budget
from llm_rl.config import ExperimentConfig
from llm_rl.distributed import LoopDistribution
from llm_rl.evaluate import evaluate
from llm_rl.generation import GenerationBackend, make_backend
from llm_rl.policy import Policy
from relabel_rl.rundir import RunDir, read_metrics, seed_everything

__all__ = ["Collect", "LossFn", "PromptCursor", "TaskData", "load_task", "run_training", "truncate_metrics"]

Collect = Callable[[list[dict], Policy, GenerationBackend, torch.Generator], Any]
LossFn = Callable[[Any, Policy], tuple[torch.Tensor, dict[str, float]]]

# The task rows are the same for every arm and seed: the seed varies the order, the samples and the init only.
DATA_SEED = 0


@dataclass(frozen=True)
class TaskData:
    """The task of a recipe.

    Attributes:
      verifier: a `verifiers.ContainedVerifier` (failures score 0 and are counted in ``verifier.stats``).
      train: ``task.train_size`` rows of the train split (RL prompts).
      test: ``task.test_size`` rows of the test split; evaluation uses the first ``eval.num_examples``.
    """

    verifier: Any
    train: list[dict]
    test: list[dict]


def load_task(cfg: ExperimentConfig) -> TaskData:
    """Load ``task.verifier`` (contained, ``task.verifier_timeout``) and generate the train and test rows."""
    import verifiers

    inner = verifiers.load(cfg.task.verifier)
    timeout = "auto" if cfg.task.verifier_timeout is None else cfg.task.verifier_timeout
    verifier = verifiers.ContainedVerifier(inner, timeout=timeout)
    difficulty = dict(cfg.task.difficulty)
    train = [
        dict(r) for r in inner.generate(cfg.task.train_size, seed=DATA_SEED, split="train", **difficulty)
    ]
    test = [dict(r) for r in inner.generate(cfg.task.test_size, seed=DATA_SEED, split="test", **difficulty)]
    return TaskData(verifier=verifier, train=train, test=test)


class PromptCursor:
    """Walks the training rows in a fresh seeded permutation each epoch; its state is two integers."""

    def __init__(self, num_rows: int, *, seed: int) -> None:
        if num_rows < 1:
            raise ValueError("the training set is empty")
        self.num_rows, self.seed = num_rows, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into the next epoch's permutation when needed)."""
        out = []
        while len(out) < k:
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.num_rows - self.position)
            out += self._order[self.position : self.position + take]
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def _trainable_state(policy: Policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in policy.named_parameters() if p.requires_grad}


def _save_checkpoint(directory: Path, policy: Policy, optimizer: Any, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = directory.parent / f"{directory.name}.tmp"
    old = directory.parent / f"{directory.name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(policy), str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(state.pop("rng"), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def _find_checkpoint(directory: Path) -> Path | None:
    """``last``, or ``last.old`` when a kill landed between the two renames of a save."""
    for candidate in (directory, directory.parent / f"{directory.name}.old"):
        if (candidate / "state.json").exists():
            return candidate
    return None


def _load_checkpoint(directory: Path, policy: Policy, optimizer: Any) -> dict[str, Any]:
    from safetensors.torch import load_file

    params = load_file(str(directory / "trainable.safetensors"))
    expected = {n for n, p in policy.named_parameters() if p.requires_grad}
    if set(params) != expected:
        missing, extra = sorted(expected - set(params))[:3], sorted(set(params) - expected)[:3]
        raise ValueError(
            f"checkpoint {directory} does not match the policy (missing {missing}, unexpected {extra})"
        )
    with torch.no_grad():
        named = dict(policy.named_parameters())
        for n, value in params.items():
            named[n].copy_(value.to(named[n].device, named[n].dtype))
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=False))
    state = json.loads((directory / "state.json").read_text())
    state["rng"] = torch.load(directory / "rng.pt", weights_only=False)
    return state


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def _set_rng_state(generator: torch.Generator, rng: dict[str, Any]) -> None:
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])


def truncate_metrics(run: RunDir, step: int) -> None:
    """Drop records a killed session logged after the checkpoint at ``step`` (they will be logged again)."""
    records = read_metrics(run.metrics_path)
    kept = [r for r in records if not isinstance(r.get("step"), int | float) or r["step"] <= step]
    if len(kept) != len(records):
        tmp = run.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(run.metrics_path)


_truncate_metrics = truncate_metrics  # the name the GRPO arm imports


# ---------------------------------------------------------------------------------------------------------------
# The loop


def run_training(
    cfg: ExperimentConfig,
    run: RunDir,
    policy: Policy,
    *,
    collect: Collect,
    loss_fn: LossFn,
    budget: Budget | None = None,
    task: TaskData | None = None,
    eval_rows: Sequence[dict] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``policy`` with the arm's ``collect``/``loss_fn`` until ``cfg.budget`` is spent; see the module doc.

    Args:
      cfg: the recipe (``optim``, ``budget``, ``eval``, ``task``, ``model.generation_backend``, ``seed``).
      run: the run directory (metrics, checkpoints, ``final``); resumed from ``run.checkpoint_dir/last``.
      policy: the policy to train, already loaded from the warm start (weights are overwritten on resume).
      collect, loss_fn: the arm's algorithm (module docstring).
      budget: the counters to charge; pass the object your ``collect`` closes over (it is restored in place on
        resume). Default: a fresh `Budget`.
      task: the task data (default: `load_task(cfg)`); its verifier's failure stats are logged.
      eval_rows: held-out rows (default: the first ``eval.num_examples`` of ``task.test``).
      progress: show a progress bar on the budget fraction.

    Returns:
      The final evaluation record (``pass@1``, ``pass@k``, ``k``, ``mean_score``, ``step`` and the budget
      counters).
    """
    from accelerate import Accelerator

    budget = budget if budget is not None else Budget()
    task = task if task is not None else load_task(cfg)
    rows_eval = list(eval_rows) if eval_rows is not None else task.test[: cfg.eval.num_examples]
    seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    cursor = PromptCursor(len(task.train), seed=cfg.seed)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
    prepared, optimizer = accelerator.prepare(policy, optimizer)
    policy = accelerator.unwrap_model(prepared)
    backend = make_backend(cfg.model.generation_backend, policy, budget)
    # Under `accelerate launch`: seeded prompt chunks shared by the processes, summed gradients, exact global
    # counters, main-process-only logging/evaluation/checkpoints (llm_rl/distributed.py).
    dist = LoopDistribution(
        seed=cfg.seed,
        prompts_per_step=cfg.optim.prompts_per_step,
        prompt_chunks=cfg.optim.prompt_chunks,
        budget=budget,
        backward=accelerator.backward,
    )

    step, evals_done = 0, 0
    stats_at_resume: dict[str, int] = {}  # verifier stats (summed over processes) saved with the checkpoint
    ckpt = _find_checkpoint(run.checkpoint_dir / "last")
    if ckpt is not None:
        state = _load_checkpoint(ckpt, policy, optimizer)
        step, evals_done = int(state["step"]), int(state["evals_done"])
        stats_at_resume = dict(state.get("verifier_stats", {}))
        budget.load_state_dict(state["budget"])
        cursor.load_state_dict(state["cursor"])
        _set_rng_state(generator, state["rng"])
        dist.sync.reset()
        if dist.is_main:
            truncate_metrics(run, step)
            run.log({"kind": "resume", "step": step, **budget.as_dict()})
        dist.barrier()

    def run_verifier_stats() -> dict[str, int]:
        """The run's verifier stats so far: this session's, summed over processes (collective), plus the resumed."""
        session = dist.sum_counts(task.verifier.stats.as_dict())
        return {k: stats_at_resume.get(k, 0) + session.get(k, 0) for k in stats_at_resume | session}

    def checkpoint() -> None:
        with budget.paused():
            state = {
                "step": step,
                "evals_done": evals_done,
                "verifier_stats": run_verifier_stats(),
                "budget": budget.state_dict(),
                "cursor": cursor.state_dict(),
                "rng": _rng_state(generator),
            }
            if dist.is_main:
                _save_checkpoint(run.checkpoint_dir / "last", policy, optimizer, state)
            dist.barrier()

    def run_eval() -> dict[str, Any]:
        verifier_stats = run_verifier_stats()
        if not dist.is_main:  # the main process evaluates; the others wait for its record
            with budget.paused():
                return dist.broadcast(None)
        with budget.paused():
            metrics = evaluate(
                backend,  # the run's own backend (its budget is detached while evaluating): no second engine
                task.verifier,
                rows_eval,
                k=cfg.eval.pass_k,
                temperature=cfg.eval.temperature,
                max_new_tokens=cfg.task.max_completion_tokens,
                progress=False,
            )
            record = {"kind": "eval", "step": step, **budget.as_dict(), **metrics}
            record["verifier_stats"] = verifier_stats
            run.log(record)
            return dist.broadcast(record)

    last_eval: dict[str, Any] | None = None
    if ckpt is None:
        last_eval = run_eval()  # step 0, before training
    else:  # a session killed after its final evaluation need not evaluate again
        done = [r for r in run.metrics() if r.get("kind") == "eval" and r.get("step") == step]
        last_eval = done[-1] if done else None
    limit = cfg.budget.limit
    bar = tqdm(
        total=limit,
        initial=min(limit, budget.value(cfg.budget.axis)),
        desc=f"{cfg.arm} seed {cfg.seed}",
        unit=_unit(cfg.budget.axis),
        disable=not progress or not dist.is_main,
        dynamic_ncols=True,
    )
    while not dist.exhausted(budget, cfg.budget):
        examples = [task.train[i] for i in cursor.next(cfg.optim.prompts_per_step)]
        optimizer.zero_grad(set_to_none=True)
        if dist.active:  # this process's seeded chunks of the global batch; gradients summed over processes
            loss_value, metrics, has_grad = dist.stepper.run(
                step, examples, policy, backend, collect=collect, loss_fn=loss_fn, params=params
            )
        else:
            policy.eval()
            items = collect(examples, policy, backend, generator)
            policy.train()
            loss, metrics = loss_fn(items, policy)
            has_grad, loss_value = loss.requires_grad, float(loss.detach())
            if has_grad:
                accelerator.backward(loss)
        if has_grad:
            grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        else:  # nothing to learn from this batch (e.g. every advantage is zero): the step is still taken
            grad_norm = torch.tensor(0.0)
        optimizer.step()
        budget.add_optimizer_step()
        dist.sync.sync()  # every process now holds the global counters
        step += 1
        record = {"kind": "train", "step": step, **budget.as_dict(), "loss": loss_value}
        record["grad_norm"] = float(grad_norm)
        record.update({k: float(v) for k, v in metrics.items()})
        if dist.is_main:
            run.log(record)
        bar.update(min(limit, budget.value(cfg.budget.axis)) - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        last_eval = None
        crossings = math.floor(budget.value(cfg.budget.axis) / cfg.budget.eval_every)
        due = crossings > evals_done and not budget.exhausted(cfg.budget)
        due, crossings = dist.broadcast((due, crossings))  # one decision for all processes
        if due:
            evals_done = crossings
            last_eval = run_eval()
        if step % cfg.optim.checkpoint_every == 0:
            checkpoint()
    bar.close()
    if last_eval is None or last_eval["step"] != step:
        last_eval = run_eval()  # the final evaluation
    checkpoint()
    verifier_stats = run_verifier_stats()
    if dist.is_main:
        run.log({"kind": "verifier", "step": step, **verifier_stats})
        policy.save_pretrained(run.path / "final")
    dist.barrier()
    return {k: v for k, v in last_eval.items() if k != "kind"}


def _unit(axis: str) -> str:
    return {"generated_tokens": "tok", "total_tokens": "tok", "wall_time": "s"}.get(axis, axis.split("_")[0])
