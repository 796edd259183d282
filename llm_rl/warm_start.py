"""The warm start that seeds every arm: SFT on generated gold solutions until a held-out pass rate is reached.

RL from a policy that never succeeds learns nothing (every reward is 0), so each arm starts from the same
supervised checkpoint. TRL's `SFTTrainer` fine-tunes on prompt/completion pairs built from the verifier's gold
``solution`` column (loss on the completion only, EOS appended by TRL); a `TrainerCallback` measures greedy pass@1
on held-out examples every ``warm_start.eval_every`` steps and stops training once it reaches
``warm_start.target_pass_rate`` (or at ``warm_start.max_steps``). The pass rate actually reached is recorded in
``out_dir/warm_start.json`` and returned, because it is an experimental condition: the arms are compared *at* that
starting pass rate (`compare.warm_start_pass_rates` sweeps it).

Data: the SFT rows are train-split examples drawn with their own seed range (`SFT_DATA_SEED`), the held-out rows
are test-split examples drawn with another (`VALIDATION_SEED`), so the stopping rule never looks at the rows the
arms are finally evaluated on (`llm_rl.harness.data.load_task` draws those with seed 0).

The result is a full model (a LoRA warm start is merged) plus a fresh value head, saved with
`Policy.save_pretrained` to ``out_dir/model``. A rerun with the same recipe sections, base model and seed reuses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

from llm_rl.config import ExperimentConfig
from llm_rl.harness.distributed import is_main, process_state
from llm_rl.harness.evaluation import evaluate
from llm_rl.harness.user_data import task_verifier
from llm_rl.model import Policy, load_policy
from relabel_rl.config import config_to_dict
from relabel_rl.rundir import pin_config

__all__ = ["SFT_DATA_SEED", "VALIDATION_SEED", "WarmStartResult", "warm_start"]

SFT_DATA_SEED = 100_000
VALIDATION_SEED = 1_000_000
MAX_SFT_ROWS = 4096


@dataclass(frozen=True)
class WarmStartResult:
    """Attributes:
    path: the saved warm-started `Policy` (load with `llm_rl.model.load_policy`).
    pass_rate: greedy pass@1 on the held-out rows at the end of the warm start.
    steps: SFT optimizer steps taken.
    missed_target: a target pass rate was set and not reached (``warm_start.json`` records it too, with the
      warning printed, under ``missed_target`` / ``warning``).
    """

    path: Path
    pass_rate: float
    steps: int
    missed_target: bool = False


# Task fields the warm start does not read (what RL may learn from, the tuning split): a recipe that varies them
# (e.g. compare variants under both feedback settings) shares one warm start.
_RL_ONLY_TASK_FIELDS = ("feedback", "validation_size")


def _warm_start_task(cfg: ExperimentConfig) -> dict[str, Any]:
    """The task section as the warm start sees it (without `_RL_ONLY_TASK_FIELDS`)."""
    task = config_to_dict(cfg.task)
    return {k: v for k, v in task.items() if k not in _RL_ONLY_TASK_FIELDS}


def _fingerprint(cfg: ExperimentConfig, base_model: str, seed: int) -> str:
    key = {
        "model": config_to_dict(cfg.model),
        "task": _warm_start_task(cfg),
        "warm_start": config_to_dict(cfg.warm_start),
        "base_model": str(base_model),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _gold_rows(verifier: Any, n: int, minimum: int, difficulty: dict[str, Any]) -> Any:
    """``n`` distinct train rows, or as many as a small task space holds (halving ``n`` down to ``minimum``)."""
    while True:
        try:
            return verifier.generate(n, seed=SFT_DATA_SEED, split="train", **difficulty)
        except ValueError as e:
            if "distinct" not in str(e) or n <= minimum:
                raise
            n = max(minimum, n // 2)


def warm_start(
    cfg: ExperimentConfig, base_model: str, out_dir: str | Path, *, seed: int, progress: bool = True
) -> WarmStartResult:
    """SFT ``base_model`` on gold solutions of ``cfg.task`` (see the module docstring); cached in ``out_dir``.

    Args:
      cfg: the recipe (``warm_start``, ``task``, ``model`` sections are used).
      base_model: a ``from_pretrained`` path (e.g. from `llm_rl.model.resolve_model_path`).
      out_dir: where ``model/`` and ``warm_start.json`` go.
      seed: seeds the SFT data order, the value-head init and the trainer.
      progress: show the progress bar (held-out pass@1 against the target, on the main process).

    Raises:
      ConfigError: ``out_dir`` holds a warm start made with other ``model``/``task``/``warm_start`` settings (it is
        shared by every run of the output directory: retraining it would change what they started from).
    """
    out = Path(out_dir)
    record_file = out / "warm_start.json"
    fingerprint = _fingerprint(cfg, base_model, seed)
    with process_state().main_process_first():  # one writer; every process refuses a folder of another config
        pinned = {
            "model": cfg.model,
            "task": _warm_start_task(cfg),
            "warm_start": cfg.warm_start,
            "seed": seed,
        }
        pin_config(out, pinned, what="warm start")
    if record_file.exists():
        record = json.loads(record_file.read_text())
        if record.get("fingerprint") == fingerprint and (out / "model" / "value_head.json").exists():
            if record.get("warning"):
                _warn(record["warning"])
            return WarmStartResult(
                Path(record["path"]),
                float(record["pass_rate"]),
                int(record["steps"]),
                bool(record.get("missed_target", False)),
            )
    ws = cfg.warm_start
    if ws.target_pass_rate is not None and not 0.0 <= ws.target_pass_rate <= 1.0:
        raise ValueError(f"warm_start.target_pass_rate must be in [0, 1] or null, got {ws.target_pass_rate}")
    for name in ("max_steps", "eval_every", "batch_size", "eval_examples"):
        if getattr(ws, name) < 1:
            raise ValueError(f"warm_start.{name} must be >= 1, got {getattr(ws, name)}")
    out.mkdir(parents=True, exist_ok=True)
    if not ws.enabled:
        raise ValueError("warm_start.enabled is false: use the base model directly")
    return _train(cfg, base_model, out, seed=seed, fingerprint=fingerprint, progress=progress)


def _train(
    cfg: ExperimentConfig, base_model: str, out: Path, *, seed: int, fingerprint: str, progress: bool
) -> WarmStartResult:
    ws = cfg.warm_start
    verifier = task_verifier(cfg)  # the verifier, or its scoring over the user's rows (task.data)
    difficulty = dict(cfg.task.difficulty)
    gold = _gold_rows(verifier, min(ws.max_steps * ws.batch_size, MAX_SFT_ROWS), ws.batch_size, difficulty)
    train_rows = datasets.Dataset.from_dict({"prompt": gold["prompt"], "completion": gold["solution"]})
    held_out = [
        dict(r) for r in verifier.generate(ws.eval_examples, seed=VALIDATION_SEED, split="test", **difficulty)
    ]
    torch.manual_seed(seed)
    policy = load_policy(base_model, dtype=cfg.model.dtype)
    if cfg.model.lora.enabled:
        policy = policy.with_lora(cfg.model.lora)

    def pass_rate() -> float:
        m = evaluate(
            policy, verifier, held_out, k=0, max_new_tokens=cfg.task.max_completion_tokens, progress=False
        )
        return float(m["pass@1"])

    world = process_state().num_processes  # under `accelerate launch` TRL shards the batch over the processes
    if ws.batch_size % world:
        raise ValueError(
            f"warm_start.batch_size ({ws.batch_size}) is the global batch: it must be a multiple of the number "
            f"of processes ({world})"
        )
    bar = _PassRateBar(ws.target_pass_rate, ws.max_steps) if progress and is_main() else None
    stopper = _StopAtPassRate(
        pass_rate, every=ws.eval_every, max_steps=ws.max_steps, target=ws.target_pass_rate, bar=bar
    )
    trainer = SFTTrainer(
        model=policy.model,
        args=_sft_args(cfg, out, policy, world=world, seed=seed, progress=progress),
        train_dataset=train_rows,
        processing_class=policy.tokenizer,
        callbacks=[stopper],
    )
    # TRL's step bar and log dicts would bury the one number that matters here: the bar above shows it
    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    trainer.train()
    steps = int(trainer.state.global_step)
    history = stopper.history
    if not history or history[-1]["step"] != steps:
        history.append({"step": steps, "pass@1": pass_rate()})
    model = trainer.model
    if cfg.model.lora.enabled:
        model = model.merge_and_unload()
    torch.manual_seed(seed)  # the fresh value head's init
    final = Policy(model, policy.tokenizer, value_head_hidden=cfg.model.value_head_hidden)
    target = out / "model"
    rate = history[-1]["pass@1"]
    missed, warning = _outcome(bar, rate, steps, ws)
    result = WarmStartResult(target.resolve(), float(rate), steps, missed)
    if is_main():  # one writer; the others wait for the model on disk
        record = {
            "path": str(target.resolve()),
            "pass_rate": rate,
            "steps": steps,
            "target_pass_rate": ws.target_pass_rate,
            "reached_target": ws.target_pass_rate is not None and rate >= ws.target_pass_rate,
            "missed_target": missed,  # a target was set and not reached: the report says so at its top
            "warning": warning,
            "history": history,
            "base_model": str(base_model),
            "seed": seed,
            "sft_rows": len(gold),
            "processes": world,
            "held_out_rows": len(held_out),
            "fingerprint": fingerprint,
        }
        _save(final, out, record)
    trainer.accelerator.wait_for_everyone()
    return result


class _StopAtPassRate(TrainerCallback):
    """Evaluate greedy pass@1 every ``every`` steps (and at ``max_steps``); stop once it reaches ``target``."""

    def __init__(
        self,
        pass_rate: Callable[[], float],
        *,
        every: int,
        max_steps: int,
        target: float | None,
        bar: _PassRateBar | None = None,
    ) -> None:
        self.pass_rate, self.every, self.max_steps, self.target = pass_rate, every, max_steps, target
        self.history: list[dict[str, Any]] = []
        self.bar = bar

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= self.max_steps:
            rate = self.pass_rate()
            self.history.append({"step": state.global_step, "pass@1": rate})
            if self.bar is not None:
                self.bar.measured(state.global_step, rate)
            if self.target is not None and rate >= self.target:
                control.should_training_stop = True
        elif self.bar is not None:
            self.bar.stepped(state.global_step)
        return control


class _PassRateBar:
    """The warm start's progress: held-out greedy pass@1 against its target (the quantity that ends it), with the
    SFT step and its limit beside it. Without a target, pass@1 on its own [0, 1] scale."""

    REDRAW_SECONDS = 1.0  # a tiny model takes ~25 SFT steps a second: the step count is redrawn once a second

    def __init__(self, target: float | None, max_steps: int) -> None:
        self.goal = f"target {target:g}" if target is not None else "no target"
        self.max_steps, self.rate = max_steps, None
        self.bar = tqdm(
            total=target if target else 1.0,
            desc=self._text(0),
            bar_format="{desc} |{bar:20}| [{elapsed}]",
            file=sys.stderr,
        )
        self._shown = time.monotonic()

    def measured(self, step: int, rate: float) -> None:
        self.rate = rate
        self.bar.n = min(rate, self.bar.total)
        self.stepped(step, force=True)

    def stepped(self, step: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._shown >= self.REDRAW_SECONDS:
            self._shown = now
            self.bar.set_description_str(self._text(step), refresh=False)
            self.bar.refresh()

    def _text(self, step: int) -> str:
        rate = "-" if self.rate is None else f"{self.rate:.3f}"
        return f"warm start: held-out pass@1 {rate} ({self.goal}), SFT step {step}/{self.max_steps}"

    def close(self) -> None:
        self.bar.close()


def _outcome(bar: _PassRateBar | None, rate: float, steps: int, ws: Any) -> tuple[bool, str | None]:
    """Close the bar on the final pass rate; ``(missed_target, warning)``, the warning printed when missed."""
    if bar is not None:
        bar.measured(steps, rate)
        bar.close()
    missed = ws.target_pass_rate is not None and rate < ws.target_pass_rate
    warning = _missed_target_warning(rate, steps, ws) if missed else None
    if warning is not None:
        _warn(warning)
    return missed, warning


def _missed_target_warning(rate: float, steps: int, ws: Any) -> str:
    return (
        f"the warm start MISSED its target: held-out pass@1 {rate:.3f} < warm_start.target_pass_rate "
        f"{ws.target_pass_rate:g} after {steps} SFT steps (warm_start.max_steps {ws.max_steps}). Every arm starts "
        "from a policy that rarely succeeds, so outcome-rewarded arms get little signal and the comparison may "
        "say nothing; raise warm_start.max_steps or warm_start.learning_rate, or lower the target"
    )


def _warn(text: str) -> None:
    if is_main():
        print(f"\n{'!' * 100}\nWARNING: {text}\n{'!' * 100}\n", file=sys.stderr, flush=True)


def _sft_args(
    cfg: ExperimentConfig, out: Path, policy: Policy, *, world: int, seed: int, progress: bool
) -> SFTConfig:
    ws = cfg.warm_start
    return SFTConfig(
        output_dir=str(out / "trainer"),
        max_steps=ws.max_steps,
        per_device_train_batch_size=ws.batch_size // world,
        learning_rate=ws.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, ws.max_steps // 10),
        weight_decay=0.0,
        completion_only_loss=True,
        packing=False,
        max_length=policy.max_positions or 1024,
        activation_checkpointing=False,  # TRL defaults to on; a tiny model only pays its cost
        bf16=cfg.model.dtype == "bfloat16",
        fp16=cfg.model.dtype == "float16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        logging_steps=ws.eval_every,
        disable_tqdm=not progress,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        push_to_hub=False,
    )


def _save(policy: Policy, out: Path, record: dict[str, Any]) -> None:
    """The warm-started policy to ``out/model`` and its record to ``out/warm_start.json`` (written last)."""
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    policy.save_pretrained(target)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    tmp = out / "warm_start.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / "warm_start.json")
