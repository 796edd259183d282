"""GRPO inside the harness: TRL's `GRPOTrainer` runs the update, the harness does everything else.

The arm (`llm_rl.arms.grpo`) translates the recipe into a `trl.GRPOConfig`; this module runs TRL's trainer with it
and reports into the same `Session` functions the hand-written loop calls — budget stop, evaluation schedule and
held-out evaluation, checkpoint state and exact resume, verifier statistics, records, progress — through:

* **metering.** `_MeteredGRPOTrainer._generate` charges what TRL's generation did: every completion token TRL
  sampled (its ``completion_ids``, EOS included, padding after EOS excluded; with tools, only model-sampled tokens),
  every prompt token it prefilled — TRL's transformers path repeats each prompt ``num_generations`` times in the
  batch and prefills each copy, so a prompt's tokens count ``num_generations`` times (the HF backend of the
  hand-written arms prefills a distinct prefix once; the difference is real spend); with TRL's vLLM server mode
  each distinct prompt is sent once and counted once; in colocate mode TRL sends every copy — and one prompt per
  group of ``num_generations`` rows. The counts are gathered over processes (every process takes part in TRL's
  generation) and charged once, by the main process; the budget sync at each step end spreads the totals.
  Rewards are scored through the metered verifier (`metered_reward_function`). The same override times
  generation, so train records carry ``gen_tokens_per_s``;
* **a callback** (`_HarnessCallback`): at each step end the budget is synced, TRL's step count becomes
  ``optimizer_steps``, training stops once the budget is spent (``control.should_training_stop``; a step that
  started under the limit finishes, as in every arm), and the evaluation schedule runs; TRL's logs become
  ``train`` records; each TRL checkpoint (``save_steps = optim.checkpoint_every``, kept ``save_total_limit = 2``)
  gets the harness state beside it (`llm_rl.harness.checkpoints.write_state`), so it is verified, and resumed,
  like the loop's.

Resuming: the newest verified ``checkpoint-N`` is handed to ``trainer.train(resume_from_checkpoint=...)`` — TRL
restores weights, optimizer, scheduler and RNG (with ``torch.load(weights_only=True)``) — and the harness state
beside it restores the budget counters and the evaluation schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from llm_rl.arms.base import TrlArm
from llm_rl.harness.checkpoints import verify, write_state
from llm_rl.harness.distributed import is_main
from llm_rl.harness.metering import MeteredVerifier, metered_reward_function
from llm_rl.harness.session import Session

__all__ = ["train_with_trl"]

# Train-record keys taken from TRL's logs (renamed where TRL's names are long).
_TRAIN_LOG_KEYS = {
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "reward": "reward",
    "reward_std": "reward_std",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "entropy": "entropy",
    "kl": "kl",
    "clip_ratio/region_mean": "clip_ratio",
    "rejected_step_fraction": "rejected_step_fraction",  # process supervision (task.feedback: steps)
}


def train_with_trl(arm: TrlArm, session: Session, policy: Any, args: Any) -> dict[str, Any]:
    """Train ``policy`` with TRL's trainer on ``args`` (``arm.trainer_args``) until the session's budget is spent,
    resuming from the newest good checkpoint; returns the final evaluation record."""
    found = session.find_checkpoint(verify)
    step = session.restore(found[1]) if found is not None else 0
    last_eval = session.begin(step if found is not None else None)
    if found is None:
        last_eval = session.evaluate(policy, 0)
    if not session.budget.exhausted(session.cfg.budget):
        callback = _HarnessCallback(session, policy)
        trainer = _trainer_class(arm.trainer_class())(
            model=policy.model,
            reward_funcs=_reward_function(session.verifier),
            args=args,
            train_dataset=datasets.Dataset.from_list(session.task.train),
            processing_class=policy.tokenizer,
            callbacks=[callback],
            session=session,
        )
        callback.trainer = trainer
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainer.train(resume_from_checkpoint=str(found[0]) if found is not None else None)
        step = session.budget.optimizer_steps = int(trainer.state.global_step)
        last_eval = callback.last_eval or last_eval
    if last_eval is None or last_eval["step"] != step:
        last_eval = session.evaluate(policy, step)  # the final evaluation
    return session.finish(policy, step, last_eval)


def _reward_function(verifier: MeteredVerifier, seen: list[int] | None = None) -> Callable[..., list]:
    """The metered reward function TRL calls. ``seen`` (tests) collects the length of every ``completion_ids``
    TRL passes: an independent count of the generated tokens."""
    inner = metered_reward_function(verifier)
    if seen is None:
        return inner

    def reward(prompts: list, completions: list, completion_ids: list | None = None, **columns: Any) -> list:
        if completion_ids is not None:
            seen.extend(len(ids) for ids in completion_ids)
        return inner(prompts, completions, **columns)

    reward.__name__ = reward.__qualname__ = inner.__name__
    return reward


def _trainer_class(base: type) -> type:
    """The arm's trainer class ``base`` (TRL's `GRPOTrainer` or a subclass) with metered generation (module
    docstring); its instances get the metered verifier as ``verifier``."""

    class _MeteredGRPOTrainer(base):
        def __init__(self, *args: Any, session: Session, **kwargs: Any) -> None:
            self.session = session
            self.verifier = session.verifier  # an arm's trainer that checks steps goes through the meter
            self.generation_seconds = 0.0
            self.generation_tokens = 0
            super().__init__(*args, **kwargs)

        def _generate(self, prompts: list):
            start = time.perf_counter()
            out = super()._generate(prompts)
            if self.model.training:
                self._charge(out[0], out[1], out[2], rows=len(prompts), seconds=time.perf_counter() - start)
            return out

        def _charge(
            self, prompt_ids: list, completion_ids: list, tool_mask: list | None, *, rows: int, seconds: float
        ):
            if tool_mask is not None:  # only model-sampled tokens (tool output is not generated)
                generated = sum(int(sum(m)) for m in tool_mask)
            else:
                generated = sum(len(ids) for ids in completion_ids)
            local = torch.tensor(
                [generated, sum(len(ids) for ids in prompt_ids), rows], device=self.accelerator.device
            )
            # every process calls _generate together: the totals over processes, charged once (by the main one)
            generated, prefilled, rows = (
                int(x) for x in self.accelerator.gather(local).view(-1, 3).sum(0).tolist()
            )
            if self.use_vllm and self.args.vllm_mode == "server":  # each distinct prompt sent once, n=G
                prefilled //= self.num_generations
            if is_main():
                self.session.budget.charge(
                    generated_tokens=generated, prefill_tokens=prefilled, prompts=rows // self.num_generations
                )
            self.generation_seconds += seconds
            self.generation_tokens += generated

    return _MeteredGRPOTrainer


class _HarnessCallback(TrainerCallback):
    """TRL's trainer reporting into the harness (module docstring)."""

    def __init__(self, session: Session, policy: Any) -> None:
        self.session, self.policy = session, policy
        self.trainer: Any = None
        self.last_eval: dict[str, Any] | None = None
        self.progress = session.progress()

    def on_step_end(self, args, state, control, **kwargs):
        session = self.session
        session.budget.optimizer_steps = int(state.global_step)
        session.sync.sync()  # every process now holds the global counters
        self.progress.update(session.budget.value(session.cfg.budget.axis))
        if session.exhausted():
            control.should_training_stop = True
            control.should_save = True  # the final state is a checkpoint too (a rerun sees it is done)
        elif session.eval_due():
            self.last_eval = session.evaluate(self.policy, int(state.global_step))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return control
        values = {dst: float(logs[src]) for src, dst in _TRAIN_LOG_KEYS.items() if logs.get(src) is not None}
        if self.trainer is not None and self.trainer.generation_seconds > 0:
            values["gen_tokens_per_s"] = self.trainer.generation_tokens / self.trainer.generation_seconds
        self.session.log_train(int(state.global_step), values)
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        harness_state = self.session.state(int(state.global_step))  # collective: before the main one writes
        if args.should_save and checkpoint.is_dir():
            write_state(checkpoint, harness_state)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.close()
        return control
