"""Arm 1: GRPO, run by TRL's `GRPOTrainer` — the baseline that gets ONE scalar per completion.

Why TRL: GRPO is exactly what TRL's trainer implements and maintains (group sampling, group-normalised
advantages, the loss variants of GRPO / DAPO / Dr. GRPO / BNPO, KL to a reference, checkpoints and resume). This
module only adds what a fair comparison needs around it:

* **Knobs.** The recipe's ``grpo.trl`` mapping is passed to `trl.GRPOConfig`, so TRL validates it (an unknown key
  or an inconsistent batch fails before any model is loaded, with TRL's words and the dotted recipe key). Fields
  the arm must control (output_dir, seed, max_completion_length, report_to, use_cpu, checkpoint and logging
  cadence, max_steps, evaluation) are set here; a recipe that sets one gets a `ConfigError` saying where the value
  comes from instead (:data:`RESERVED_TRL_KEYS`).
* **Exact budget.** `_BudgetedGRPOTrainer` wraps TRL's ``_generate``: every completion token TRL sampled (its
  ``completion_ids``, EOS included, padding after EOS excluded) is added to ``generated_tokens``; every prompt token
  TRL prefilled is added to ``prefill_tokens`` — TRL's transformers path repeats each prompt ``num_generations``
  times in the batch and prefills each copy, so a prompt's tokens count ``num_generations`` times (the HF backend
  of the hand-written arms prefills a distinct prefix once; the difference is real spend). With TRL's vLLM
  server mode each distinct prompt is sent once with ``n=num_generations`` and counted once; in colocate mode
  TRL sends every copy (vLLM's prefix cache may then prefill less than is counted). Verifier calls are TRL's
  gathered rewards that are not None. Under ``accelerate launch`` the counts are summed over processes (every
  process takes part in TRL's generation and reward gathers), so each process holds the global totals and
  stops at the same step; only the main process evaluates, logs and saves. Optimizer steps are TRL's
  ``state.global_step``. The same wrapper times generation, so train records carry ``gen_tokens_per_s``.
* **Stopping, evaluation, checkpoints.** A `TrainerCallback` stops training once the budget axis reaches its limit
  (``control.should_training_stop``; a step that started under the limit finishes, as in every arm), evaluates
  with `llm_rl.evaluate` at step 0, at every ``budget.eval_every`` crossing and at the end, and logs the records of
  LLM_DESIGN.md. Checkpoints are TRL's (``save_steps = optim.checkpoint_every``); the Budget counters are written
  beside each one (``checkpoint-N/budget.json``) and restored on resume (``resume_from_checkpoint``).
* **Per-prompt gradients.** TRL's trainer has no hook for one prompt's gradient, so :func:`gradient_sample`
  (in `llm_rl.arms.grpo_objective`, re-exported here) re-implements the GRPO objective for one prompt, mirroring
  ``GRPOTrainer._compute_loss`` on-policy.

Departures from a plain TRL run: TRL's own progress bar and stdout printer are replaced by a progress bar over the
budget; ``max_steps`` is the budget's step limit when the axis is ``optimizer_steps`` and otherwise a large bound,
so the default LR schedule here is ``constant`` (a decaying schedule would decay over that bound); bf16/fp16
follow ``model.dtype`` and gradient checkpointing is off unless the recipe asks (TRL's defaults are bf16 and on).
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch

from llm_rl.arms.grpo_objective import gradient_sample
from llm_rl.budget import Budget
from llm_rl.config import ExperimentConfig
from relabel_rl.config import ConfigError
from relabel_rl.rundir import RunDir

__all__ = [
    "RESERVED_TRL_KEYS",
    "gradient_sample",
    "grpo_config",
    "train",
    "validate_config",
]

# GRPOConfig fields the arm sets itself, and where each value comes from.
RESERVED_TRL_KEYS: dict[str, str] = {
    "output_dir": "the run directory's checkpoints/ folder",
    "seed": "the recipe's top-level `seed`",
    "data_seed": "the recipe's top-level `seed`",
    "max_completion_length": "`task.max_completion_tokens`",
    "report_to": "metrics go to the run's metrics.jsonl (report_to=[])",
    "use_cpu": "the hardware (CPU when no CUDA device is visible)",
    "save_steps": "`optim.checkpoint_every`",
    "save_strategy": "`optim.checkpoint_every` (steps)",
    "save_only_model": "resume needs the optimizer state, so full checkpoints are always saved",
    "logging_steps": "every optimizer step is logged",
    "logging_strategy": "every optimizer step is logged",
    "max_steps": "the budget (`budget.axis`, `budget.limit`) decides when training stops",
    "num_train_epochs": "the budget decides when training stops",
    "eval_strategy": "evaluation runs llm_rl.evaluate at `budget.eval_every` crossings",
    "do_eval": "evaluation runs llm_rl.evaluate at `budget.eval_every` crossings",
    "resume_from_checkpoint": "the arm resumes from the run directory's last checkpoint",
    "push_to_hub": "runs never upload anything",
}
# Defaults the arm supplies; the recipe may override them.
_ARM_DEFAULTS: dict[str, Any] = {
    "lr_scheduler_type": "constant",
    "activation_checkpointing": False,  # TRL's default is on (as `gradient_checkpointing`); off unless asked
    "disable_tqdm": True,
    "save_total_limit": 2,
    "dataloader_num_workers": 0,
}
_STEPS_BOUND = 10_000_000  # max_steps when the budget is not counted in optimizer steps
# TRL 1.16 checks these two only mid-training (in the loss / advantage code); the arm checks them up front.
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
TRL_SCALE_REWARDS = ("group", "batch", "none")
_BUDGET_FILE = "budget.json"


# ---------------------------------------------------------------------------------------------------------------
# Config


def grpo_config(cfg: ExperimentConfig, output_dir: str | Path) -> Any:
    """The `trl.GRPOConfig` of a recipe: ``grpo.trl`` + the arm-controlled fields, validated by TRL.

    Raises:
      ConfigError: a reserved key in ``grpo.trl`` (naming where its value comes from), an unknown key (with the
        nearest valid one), or TRL's own validation error, each naming ``grpo.trl``.
    """
    from trl import GRPOConfig

    knobs = dict(cfg.grpo.trl)
    for key in knobs:
        if key in RESERVED_TRL_KEYS:
            raise ConfigError(
                f"'grpo.trl.{key}' is set by the GRPO arm, not the recipe: it comes from {RESERVED_TRL_KEYS[key]}"
            )
    valid = {f.name for f in dataclass_fields(GRPOConfig) if f.init}
    for key in knobs:
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean 'grpo.trl.{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown TRL GRPOConfig key 'grpo.trl.{key}'{hint}")
    use_cpu = not torch.cuda.is_available()
    defaults = dict(_ARM_DEFAULTS)
    defaults["bf16"] = cfg.model.dtype == "bfloat16"
    defaults["fp16"] = cfg.model.dtype == "float16"
    if "gradient_checkpointing" in knobs or "activation_checkpointing" in knobs:
        del defaults["activation_checkpointing"]
    max_steps = max(1, math.ceil(cfg.budget.limit)) if cfg.budget.axis == "optimizer_steps" else _STEPS_BOUND
    controlled = {
        "output_dir": str(output_dir),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "max_completion_length": cfg.task.max_completion_tokens,
        "report_to": [],
        "use_cpu": use_cpu,
        "save_strategy": "steps",
        "save_steps": cfg.optim.checkpoint_every,
        "save_only_model": False,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "max_steps": max_steps,
        "eval_strategy": "no",
        "push_to_hub": False,
    }
    try:
        args = GRPOConfig(**{**defaults, **knobs, **controlled})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"grpo.trl: TRL rejected the GRPO settings: {e}") from None
    if args.loss_type not in TRL_LOSS_TYPES:
        raise ConfigError(
            f"'grpo.trl.loss_type' must be one of {list(TRL_LOSS_TYPES)}, got {args.loss_type!r}"
        )
    if args.scale_rewards not in TRL_SCALE_REWARDS:
        raise ConfigError(
            f"'grpo.trl.scale_rewards' must be one of {list(TRL_SCALE_REWARDS)} (or true/false), "
            f"got {args.scale_rewards!r}"
        )
    return args


def validate_config(cfg: ExperimentConfig) -> None:
    """Early recipe check (``llm-rl train``/``compare`` call it before any heavy work): TRL validates ``grpo.trl``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        grpo_config(cfg, tmp)


# ---------------------------------------------------------------------------------------------------------------
# Data, verifier, evaluation helpers (thin: the task and evaluation live in verifiers / llm_rl.evaluate)


def _reward_function(contained: Any, seen: list[int] | None = None) -> Callable[..., list]:
    """``verifiers.reward_function`` (verifier calls are counted by the trainer, from TRL's gathered rewards).

    ``seen`` (tests) collects the length of every ``completion_ids`` TRL passes, an independent count of the
    generated tokens.
    """
    import verifiers

    inner = verifiers.reward_function(contained)
    if seen is None:
        return inner

    def reward(prompts: list, completions: list, completion_ids: list | None = None, **columns: Any) -> list:
        if completion_ids is not None:
            seen.extend(len(ids) for ids in completion_ids)
        return inner(prompts, completions, **columns)

    reward.__name__ = reward.__qualname__ = inner.__name__
    return reward


def _evaluate(cfg: ExperimentConfig, policy: Any, contained: Any, test: Any) -> dict[str, Any]:
    """Held-out evaluation, called exactly as `llm_rl.loop` calls it for the other arms (its own seeded
    generator, so the training RNG is untouched; the backend switches the model to eval mode and back)."""
    from llm_rl.evaluate import evaluate

    return dict(
        evaluate(
            policy,
            contained,
            test,
            k=cfg.eval.pass_k,
            temperature=cfg.eval.temperature,
            max_new_tokens=cfg.task.max_completion_tokens,
            progress=False,
        )
    )


# ---------------------------------------------------------------------------------------------------------------
# Trainer + callback


def _make_trainer_class() -> type:
    from trl import GRPOTrainer

    class _BudgetedGRPOTrainer(GRPOTrainer):
        """`GRPOTrainer` whose generation adds exact token counts (and its duration) to a Budget."""

        def __init__(self, *args: Any, budget: Budget, **kwargs: Any) -> None:
            self.budget = budget
            self.generation_seconds = 0.0
            self.generation_tokens = 0
            super().__init__(*args, **kwargs)

        def _generate(self, prompts: list):
            start = time.perf_counter()
            out = super()._generate(prompts)
            elapsed = time.perf_counter() - start
            prompt_ids, completion_ids, tool_mask = out[0], out[1], out[2]
            if self.model.training:
                if tool_mask is not None:  # only model-sampled tokens (tool output is not generated)
                    generated = sum(int(sum(m)) for m in tool_mask)
                else:
                    generated = sum(len(ids) for ids in completion_ids)
                local = torch.tensor(
                    [generated, sum(len(ids) for ids in prompt_ids)], device=self.accelerator.device
                )
                # every process calls _generate together: sum over processes, so each holds the global totals
                generated, prefilled = (
                    int(x) for x in self.accelerator.gather(local).view(-1, 2).sum(0).tolist()
                )
                if self.use_vllm and self.args.vllm_mode == "server":  # each distinct prompt sent once, n=G
                    prefilled //= self.num_generations
                self.budget.add_generated(generated)
                self.budget.add_prefill(prefilled)
                self.generation_seconds += elapsed
                self.generation_tokens += generated
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if self.model.training:  # gathered over processes by TRL: one verifier call per non-NaN reward
                self.budget.add_verifier_calls(int((~torch.isnan(rewards_per_func)).sum()))
            return rewards_per_func

    return _BudgetedGRPOTrainer


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
}


def _make_callback(
    cfg: ExperimentConfig, run: RunDir, policy: Any, contained: Any, test: Any, budget: Budget, state: dict
) -> Any:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _BudgetCallback(TrainerCallback):
        """Stop at the budget, evaluate at ``eval_every`` crossings, log train records, save the Budget."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.bar = tqdm(
                total=float(cfg.budget.limit), desc=f"grpo seed {cfg.seed}", unit="", leave=False,
                disable=not _is_main(), dynamic_ncols=True,
            )  # fmt: skip

        def _progress(self) -> None:
            self.bar.n = min(float(cfg.budget.limit), budget.value(cfg.budget.axis))
            self.bar.refresh()

        def on_step_end(self, args, trainer_state, control, **kwargs):
            budget.optimizer_steps = int(trainer_state.global_step)
            self._progress()
            if budget.exhausted(cfg.budget):
                control.should_training_stop = True
                control.should_save = True  # the final state is a checkpoint too (a rerun sees it is done)
                return control
            index = int(budget.value(cfg.budget.axis) // cfg.budget.eval_every)
            if index > state["last_eval_index"]:
                _log_eval(cfg, run, policy, contained, test, budget, int(trainer_state.global_step), state)
                state["last_eval_index"] = index
            return control

        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return control
            record: dict[str, Any] = {
                "kind": "train",
                "step": int(trainer_state.global_step),
                **budget.as_dict(),
            }
            for src, dst in _TRAIN_LOG_KEYS.items():
                if logs.get(src) is not None:
                    record[dst] = float(logs[src])
            if self.trainer is not None and self.trainer.generation_seconds > 0:
                record["gen_tokens_per_s"] = self.trainer.generation_tokens / self.trainer.generation_seconds
            if trainer_state.is_world_process_zero:
                run.log(record)
            return control

        def on_save(self, args, trainer_state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{trainer_state.global_step}"
            stats = _verifier_stats(contained, state)  # collective: every process, before the main one writes
            if args.should_save and ckpt.is_dir():
                payload = {
                    "budget": budget.state_dict(),
                    "last_eval_index": state["last_eval_index"],
                    "verifier_stats": stats,
                }
                tmp = ckpt / (_BUDGET_FILE + ".tmp")
                tmp.write_text(json.dumps(payload, indent=2))
                tmp.replace(ckpt / _BUDGET_FILE)
            return control

        def on_train_end(self, args, trainer_state, control, **kwargs):
            self._progress()
            self.bar.close()
            return control

    return _BudgetCallback()


def _is_main() -> bool:
    """Whether this is the main process (always, without ``accelerate launch``)."""
    from llm_rl.distributed import process_state

    return bool(process_state().is_main_process)


def _log_eval(
    cfg: ExperimentConfig,
    run: RunDir,
    policy: Any,
    contained: Any,
    test: Any,
    budget: Budget,
    step: int,
    state: dict,
) -> dict[str, Any]:
    """Evaluate and log an ``eval`` record (the same fields as `llm_rl.loop`); eval time is not budget wall time.
    Only the main process evaluates (the others get the budget counters only)."""
    stats = _verifier_stats(contained, state)  # collective (before evaluating: its calls are not training's)
    if not _is_main():
        return {"kind": "eval", "step": step, **budget.as_dict()}
    with budget.paused():
        result = _evaluate(cfg, policy, contained, test)
        record = {"kind": "eval", "step": step, **budget.as_dict(), **result}
        record["verifier_stats"] = stats
        run.log(record)
    return record


def _verifier_stats(contained: Any, state: dict) -> dict[str, int]:
    """The training verifier's call/failure counts, summed over processes and cumulative over resumed sessions.
    Collective under ``accelerate launch``: every process calls it at the same points."""
    from llm_rl.distributed import sum_counts

    total = dict(state.get("verifier_stats_before", {}))
    session = sum_counts({k: int(v) for k, v in contained.stats.as_dict().items()})
    for key, value in session.items():
        total[key] = total.get(key, 0) + value
    return total


def _last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` that has its Budget beside it (a checkpoint torn by a kill is skipped)."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for p in checkpoint_dir.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and (p / _BUDGET_FILE).exists():
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------------------------
# Arm interface


def train(cfg: ExperimentConfig, run: RunDir, *, init_model: str) -> dict:
    """Train with TRL's GRPO from ``init_model`` until the budget is spent; resume from ``run.checkpoint_dir``.

    Returns:
      The final evaluation record (``pass@1``, ``pass@k``, ``mean_score`` and the budget counters).
    """
    import datasets
    from transformers import PrinterCallback, ProgressCallback

    from llm_rl.loop import load_task, truncate_metrics
    from llm_rl.models import load_policy
    from relabel_rl.rundir import seed_everything

    args = grpo_config(cfg, run.checkpoint_dir)  # validated before anything heavy
    task = load_task(cfg)  # the same rows as every other arm (llm_rl.loop.load_task)
    contained = task.verifier
    train_ds = datasets.Dataset.from_list(task.train)
    test_ds = task.test[: cfg.eval.num_examples]

    resume = _last_checkpoint(run.checkpoint_dir)
    state: dict[str, Any] = {"last_eval_index": -1}
    if resume is not None:
        saved = json.loads((resume / _BUDGET_FILE).read_text())
        budget = Budget.from_state_dict(saved["budget"])
        state["last_eval_index"] = int(saved["last_eval_index"])
        state["verifier_stats_before"] = dict(saved.get("verifier_stats", {}))
    else:
        budget = Budget()

    seed_everything(cfg.seed)  # the fresh value head (saved with the final policy) is seeded too
    lora = cfg.model.lora if cfg.model.lora.enabled else None
    policy = load_policy(
        init_model, lora=lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )
    if resume is not None and _is_main():  # records a killed session wrote after its checkpoint are dropped
        truncate_metrics(run, budget.optimizer_steps)
        run.log({"kind": "resume", "step": budget.optimizer_steps, **budget.as_dict()})
    if state["last_eval_index"] < 0:
        _log_eval(cfg, run, policy, contained, test_ds, budget, 0, state)
        state["last_eval_index"] = 0

    if not budget.exhausted(cfg.budget):
        callback = _make_callback(cfg, run, policy, contained, test_ds, budget, state)
        trainer_cls = _make_trainer_class()
        trainer = trainer_cls(
            model=policy.model,
            reward_funcs=_reward_function(contained),
            args=args,
            train_dataset=train_ds,
            processing_class=policy.tokenizer,
            callbacks=[callback],
            budget=budget,
        )
        callback.trainer = trainer
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        budget.optimizer_steps = int(trainer.state.global_step)
        step = int(trainer.state.global_step)
    else:
        step = budget.optimizer_steps

    from accelerate.utils import broadcast_object_list

    done = [r for r in run.metrics() if r.get("kind") == "eval" and r.get("step") == step and step > 0]
    if args.world_size > 1:  # the main process's view decides (_log_eval is collective)
        done = broadcast_object_list([done])[0]
    final = done[-1] if done else _log_eval(cfg, run, policy, contained, test_ds, budget, step, state)
    stats = _verifier_stats(contained, state)  # collective
    if _is_main():
        run.log({"kind": "verifier", "step": step, **stats})
        policy.save_pretrained(run.path / "final")
    # Under accelerate launch only the main process evaluated: every process returns its record.
    final = broadcast_object_list([final])[0] if args.world_size > 1 else final
    return {k: v for k, v in final.items() if k != "kind"}
