"""One training run's harness services, shared by the hand-written loop and the TRL bridge.

Whichever drives the updates — `llm_rl.harness.loop` for the hand-written arms, TRL's trainer through
`llm_rl.harness.trl_bridge` for GRPO — it calls these same functions, so each of them exists once:

* the **budget** and its stop rule (`Session.exhausted`, decided collectively), the metered verifier;
* the **evaluation schedule** (step 0, every ``budget.eval_every`` units crossed, the end) and the **held-out
  evaluation** (`llm_rl.harness.evaluation.evaluate`: greedy pass@1, pass@k; its time is excluded from the
  budget's wall time; the main process evaluates and every process receives the record);
* **resume**: the newest checkpoint that verifies (`llm_rl.harness.checkpoints`), its harness state restored,
  and every record the killed session wrote after that checkpoint dropped (all of them when no checkpoint is
  usable), so ``metrics.jsonl`` never holds a step twice;
* **verifier statistics**: calls from the budget (the one count), failures from the contained verifier, summed
  over processes and carried across resumed sessions;
* **records** (`RunLogger`: ``metrics.jsonl`` + trackers) and the **final** verifier record and policy.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_rl.harness.budget import Budget
from llm_rl.harness.checkpoints import newest_good
from llm_rl.harness.data import TaskData, load_task
from llm_rl.harness.distributed import BudgetSync, any_true, barrier, broadcast, is_main, sum_counts
from llm_rl.harness.evaluation import evaluate
from llm_rl.harness.metering import MeteredVerifier
from llm_rl.harness.tracking import Progress, RunLogger
from relabel_rl.rundir import RunDir, read_metrics

__all__ = ["Session", "truncate_metrics"]


def truncate_metrics(run: RunDir, step: int) -> None:
    """Drop the records logged after ``step`` (a killed session's, to be logged again); ``step = -1``: all."""
    records = read_metrics(run.metrics_path)
    kept = [r for r in records if not isinstance(r.get("step"), int | float) or r["step"] <= step]
    if len(kept) != len(records):
        tmp = run.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(run.metrics_path)


class Session:
    """The services of one run (module docstring).

    Args:
      cfg: the recipe (``budget``, ``eval``, ``task``, ``logging``, ``arm``, ``seed``).
      run: the run directory (records, checkpoints, ``final/``).
      task: the task data (default: `load_task(cfg)`).
      progress: show the budget progress bar.
    """

    def __init__(self, cfg: Any, run: RunDir, *, task: TaskData | None = None, progress: bool = True) -> None:
        self.cfg, self.run = cfg, run
        self.task = task if task is not None else load_task(cfg)
        self.budget = Budget()
        self.sync = BudgetSync(self.budget)
        self.verifier = MeteredVerifier(self.task.verifier, self.budget, feedback=cfg.task.feedback)
        self.logger = RunLogger(run, cfg)
        # the test rows, or the validation rows (`llm-rl tune`; llm_rl/harness/data.py)
        self.eval_rows = self.task.split(cfg.eval.split)[: cfg.eval.num_examples]
        self.evals_done = 0
        self.show_progress = progress
        self._failures_before: dict[str, int] = {}

    # --- resume ---------------------------------------------------------------------------------------------
    def find_checkpoint(self, read: Callable[[Path], Any]) -> tuple[Path, Any] | None:
        """The newest checkpoint ``read`` accepts, and what it read. The main process picks it (setting aside
        and reporting the ones that fail); every process then reads the chosen one."""
        found = None
        if is_main():
            found = newest_good(self.run.checkpoint_dir, read=read, warn=lambda m: print(m, file=sys.stderr))
        path = broadcast(None if found is None else str(found[0]))
        if path is None:
            return None
        return (Path(path), found[1]) if found is not None else (Path(path), read(Path(path)))

    def restore(self, state: dict[str, Any]) -> int:
        """Restore the harness state saved in a checkpoint; returns its step."""
        self.budget.load_state_dict(state["budget"])
        self.sync.reset()  # the restored counters are global already
        self.evals_done = int(state["evals_done"])
        self._failures_before = {k: int(v) for k, v in state["verifier_failures"].items()}
        return int(state["step"])

    def begin(self, resumed_step: int | None) -> dict[str, Any] | None:
        """Start logging: drop the records after the checkpoint (all, when starting fresh), note a resume.
        Returns the evaluation already logged at the resumed step, if any (a finished run is not re-evaluated)."""
        if is_main():
            truncate_metrics(self.run, -1 if resumed_step is None else resumed_step)
            if resumed_step is not None:
                self.logger.log({"kind": "resume", "step": resumed_step, **self.budget.as_dict()})
        barrier()
        if resumed_step is None:
            return None
        done = [r for r in self.run.metrics() if r.get("kind") == "eval" and r.get("step") == resumed_step]
        return done[-1] if done else None

    def state(self, step: int) -> dict[str, Any]:
        """The harness state a checkpoint saves (collective: failure counts are summed over processes)."""
        return {
            "step": step,
            "evals_done": self.evals_done,
            "budget": self.budget.state_dict(),
            "verifier_failures": self._failures(),
        }

    # --- budget and schedule ----------------------------------------------------------------------------------
    def exhausted(self) -> bool:
        """Whether the budget is spent, decided together (a wall-time budget may tick past on one process first)."""
        return any_true(self.budget.exhausted(self.cfg.budget))

    def eval_due(self) -> bool:
        """Whether the spend crossed another ``budget.eval_every`` since the last evaluation (and the run goes
        on: the end is evaluated anyway). One decision for all processes; marks it done."""
        crossings = math.floor(self.budget.value(self.cfg.budget.axis) / self.cfg.budget.eval_every)
        due = crossings > self.evals_done and not self.budget.exhausted(self.cfg.budget)
        due, crossings = broadcast((due, crossings))
        if due:
            self.evals_done = crossings
        return due

    def progress(self) -> Progress:
        axis, limit = self.cfg.budget.axis, self.cfg.budget.limit
        desc = f"{self.cfg.arm} seed {self.cfg.seed}"
        return Progress(
            limit=limit, axis=axis, desc=desc, start=self.budget.value(axis), enabled=self.show_progress
        )

    # --- evaluation and records -------------------------------------------------------------------------------
    def evaluate(self, source: Any, step: int) -> dict[str, Any]:
        """Held-out evaluation of ``source`` (a policy or the run's backend, whose budget is detached meanwhile),
        logged as an ``eval`` record; every process returns the main process's record (collective)."""
        stats = self.verifier_stats()  # collective, and before evaluating (its calls are not training's)
        record = None
        with self.budget.paused():
            if is_main():
                metrics = evaluate(
                    source,
                    self.task.verifier,
                    self.eval_rows,
                    k=self.cfg.eval.pass_k,
                    temperature=self.cfg.eval.temperature,
                    max_new_tokens=self.cfg.task.max_completion_tokens,
                    progress=False,
                )
                record = {"kind": "eval", "step": step, **self.budget.as_dict(), **metrics}
                record["verifier_stats"] = stats
                self.logger.log(record)
            return broadcast(record)

    def log_train(self, step: int, values: dict[str, Any]) -> dict[str, Any]:
        """Log a ``train`` record: the step, the budget counters, then ``values`` (loss, metrics)."""
        record = {"kind": "train", "step": step, **self.budget.as_dict(), **values}
        self.logger.log(record)
        return record

    def verifier_stats(self) -> dict[str, int]:
        """The run's verifier statistics: calls from the budget, failures summed over processes and sessions.
        Collective."""
        failures = self._failures()
        stats = {"calls": self.budget.outcome_verifier_calls, "failures": failures.get("failures", 0)}
        stats.update({k: v for k, v in failures.items() if k.startswith("failures/")})
        if self.budget.step_verifier_calls:
            stats["step_checks"] = self.budget.step_verifier_calls
            stats.update({k: v for k, v in failures.items() if k.startswith("step_failures/")})
        return stats

    def _failures(self) -> dict[str, int]:
        session = sum_counts(self.verifier.failures())
        return {
            k: self._failures_before.get(k, 0) + session.get(k, 0) for k in self._failures_before | session
        }

    def finish(self, policy: Any, step: int, last_eval: dict[str, Any]) -> dict[str, Any]:
        """Log the verifier record, save the final policy to ``final/``; return the final evaluation."""
        stats = self.verifier_stats()
        if is_main():
            self.logger.log({"kind": "verifier", "step": step, **stats})
            policy.save_pretrained(self.run.path / "final")
        barrier()
        self.logger.close()
        return {k: v for k, v in last_eval.items() if k != "kind"}
