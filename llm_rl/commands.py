"""`llm-rl train` and `llm-rl eval`, and the plumbing every experiment command shares.

Shared by `train`, `compare` and `probe-variance`:

* :func:`parse_command` — ``RECIPE [--own-flag value] [--section.key value ...]``: the command's own flags are
  taken out, everything else is a recipe override for `relabel_rl.load_config` (so ``--seed 3`` or
  ``--relabel.num_simulations 8`` work on every command);
* :func:`validate_experiment` — everything that can be checked before a model is loaded: the verifier resolves,
  its difficulty knobs exist, GRPO's TRL dict passes `trl.GRPOConfig`, the probe's lengths are producible;
* :func:`prepare_experiment` — the base model (``tiny`` is built once into ``OUTPUT_DIR/base_model``) and the
  warm start(s) (TRL SFT, cached under ``OUTPUT_DIR/warm_start``), computed once and shared by every arm and seed;
* :func:`run_arm` — one (arm, seed) run in ``OUTPUT_DIR/runs/<arm>-seed<k>`` (a `RunDir`): skipped when it has
  ``final_metrics.json``, otherwise the arm's ``train`` resumes from the run's checkpoints.

`train` uses the very layout `compare` uses, so a run trained alone is picked up (not retrained) by a later
`compare` of the same recipe, and vice versa.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_rl.config import ARM_NAMES, ExperimentConfig
from relabel_rl.config import ConfigError, load_config

__all__ = [
    "WARM_START_SEED",
    "CommandError",
    "child_config",
    "cmd_eval",
    "cmd_train",
    "configure_threads",
    "parse_command",
    "prepare_experiment",
    "run_arm",
    "run_command",
    "run_dir_for",
    "validate_experiment",
]

# The base model and the warm start are built once per recipe with this seed; the RL seeds vary the arms only,
# so every arm and seed starts from the very same checkpoint.
WARM_START_SEED = 0
FINAL_METRICS = "final_metrics.json"


class CommandError(Exception):
    """A user-facing error: printed as ``error: ...`` and the command exits with status 2."""


class _Help(Exception):
    pass


def quiet_libraries() -> None:
    """Keep a command's output to its own progress bars and results: no per-file "Loading weights" / "Writing
    model shards" / dataset-map bars and no library deprecation warnings (errors still print)."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|peft|accelerate)\b")
    try:
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def configure_threads(cfg: ExperimentConfig) -> None:
    """One intra-op thread for the tiny preset on CPU, unless ``OMP_NUM_THREADS`` says otherwise.

    Why: a 64-wide model has nothing to split across threads, and on a 2-core machine torch's second thread only
    adds synchronisation. Measured on this project's 2-core box, one SFT step (batch 32 x 60 tokens) of the tiny
    preset: 0.04 s with one thread, 0.8 s with two (the CPU time grows as much: it is spinning, not working).
    """
    import os

    import torch

    if (
        cfg.model.name_or_path == "tiny"
        and "OMP_NUM_THREADS" not in os.environ
        and not torch.cuda.is_available()
    ):
        torch.set_num_threads(1)


def run_command(body: Callable[[], int]) -> int:
    """Run a command body, turning user errors into a one-line message and exit status 2 (130 on Ctrl-C)."""
    try:
        return int(body() or 0)
    except _Help as h:
        print(str(h))
        return 0
    except (ConfigError, CommandError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last checkpoints", file=sys.stderr)
        return 130


def parse_command(
    argv: Sequence[str], *, prog: str, flags: Mapping[str, bool], usage: str, recipe_required: bool = True
) -> tuple[str | None, dict[str, Any], ExperimentConfig]:
    """Split ``argv`` into the positional recipe, the command's own ``flags`` (name -> takes a value) and recipe
    overrides; load and return the config.

    Raises:
      CommandError: no recipe, a flag without its value.
      ConfigError: an invalid recipe or override (naming the key).
    """
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        raise _Help(f"usage: {prog} " + usage.strip())
    positional: list[str] = []
    own: dict[str, Any] = {}
    overrides: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        name = tok[2:].split("=", 1)[0].replace("-", "_") if tok.startswith("--") else None
        if name is not None and name in flags:
            if flags[name]:
                if "=" in tok:
                    own[name] = tok.split("=", 1)[1]
                    i += 1
                elif i + 1 < len(args):
                    own[name] = args[i + 1]
                    i += 2
                else:
                    raise CommandError(f"{prog}: flag --{name} needs a value")
            else:
                own[name] = True
                i += 1
        elif tok.startswith("--"):
            overrides.append(tok)
            if "=" not in tok and i + 1 < len(args):
                overrides.append(args[i + 1])
                i += 2
            else:
                i += 1
        else:
            positional.append(tok)
            i += 1
    if len(positional) > 1:
        raise CommandError(f"{prog}: expected one recipe, got {positional}")
    recipe = positional[0] if positional else None
    if recipe is None and recipe_required:
        raise CommandError(f"{prog}: missing RECIPE (a YAML file, e.g. recipes/quickstart.yaml)")
    cfg = load_config(ExperimentConfig, recipe, overrides)
    quiet_libraries()  # after the recipe is known good: a typo is reported without importing transformers
    return recipe, own, cfg


# ---------------------------------------------------------------------------------------------------------------
# Validation (cheap; before any model is loaded)


def sharded_launch() -> str | None:
    """``"FSDP"`` or ``"DeepSpeed"`` when ``accelerate launch`` started this process with sharded parameters."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return "DeepSpeed"
    return None


def validate_experiment(cfg: ExperimentConfig, *, arms: Sequence[str], probe: bool = False) -> None:
    """Check what `load_config`'s types cannot: names resolve, knobs exist, arm configs are accepted upstream.

    Raises:
      ConfigError: naming the recipe key at fault.
    """
    import verifiers

    if not arms:
        raise ConfigError("'compare.arms' is empty: name at least one of " + ", ".join(ARM_NAMES))
    for arm in arms:
        if arm not in ARM_NAMES:
            raise ConfigError(f"unknown arm {arm!r}; choose from {', '.join(ARM_NAMES)}")
    if len(set(arms)) != len(arms):
        raise ConfigError(f"'compare.arms' repeats an arm: {list(arms)}")
    sharded = sharded_launch()
    hand_written = [a for a in arms if a != "grpo"]
    if sharded and hand_written:
        raise ConfigError(
            f"{' and '.join(hand_written)} cannot run under {sharded}: the hand-written arms run their forward "
            "passes on the unwrapped model and sum gradients themselves (llm_rl/distributed.py), which is right "
            "for DDP, not for sharded parameters. Launch them with recipes/accelerate/ddp.yaml (add "
            "--model.lora.enabled true when the model does not fit), or keep this config for --arm grpo"
        )
    seeds = list(cfg.compare.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"'compare.seeds' must be a non-empty list of distinct seeds, got {seeds}")
    if not 0.0 <= cfg.compare.pass_threshold <= 1.0:
        raise ConfigError(f"'compare.pass_threshold' must be in [0, 1], got {cfg.compare.pass_threshold}")
    for i, r in enumerate(cfg.compare.warm_start_pass_rates):
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"'compare.warm_start_pass_rates[{i}]' must be in [0, 1], got {r}")
    if cfg.compare.warm_start_pass_rates and not cfg.warm_start.enabled:
        raise ConfigError("'compare.warm_start_pass_rates' needs 'warm_start.enabled: true'")
    target = cfg.warm_start.target_pass_rate
    if target is not None and not 0.0 <= target <= 1.0:
        raise ConfigError(f"'warm_start.target_pass_rate' must be in [0, 1] or null, got {target}")
    if cfg.budget.eval_every > cfg.budget.limit:
        raise ConfigError(
            f"'budget.eval_every' ({cfg.budget.eval_every:g}) exceeds 'budget.limit' ({cfg.budget.limit:g}): "
            "the learning curve would have no point between the start and the end"
        )
    if cfg.eval.pass_k < 1 or cfg.eval.num_examples < 1:
        raise ConfigError("'eval.pass_k' and 'eval.num_examples' must be >= 1")
    try:
        verifier = verifiers.load(cfg.task.verifier)
    except Exception as e:  # registry errors, plugin import errors
        raise ConfigError(f"'task.verifier': {e}") from None
    try:
        verifier.generate(1, seed=0, split="train", **cfg.task.difficulty)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise ConfigError(f"'task.difficulty': {e}") from None
    if "grpo" in arms:
        from llm_rl.arms import get_arm

        grpo = get_arm("grpo")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                grpo.grpo_config(cfg, tmp)
            except ConfigError:
                raise
            except (ValueError, TypeError) as e:
                raise ConfigError(f"'grpo.trl': {e}") from None
    for arm in arms:
        from llm_rl.arms import get_arm

        hook = getattr(get_arm(arm), "validate_config", None)
        if hook is not None:
            hook(cfg)
    if probe:
        from llm_rl.variance_probe import examples_for_length

        if cfg.probe.repeats < 2:
            raise ConfigError(f"'probe.repeats' must be >= 2 to estimate a variance, got {cfg.probe.repeats}")
        if cfg.probe.prompts_per_length < 1 or not cfg.probe.lengths:
            raise ConfigError("'probe.lengths' must be non-empty and 'probe.prompts_per_length' >= 1")
        for i, length in enumerate(cfg.probe.lengths):
            try:
                examples_for_length(verifier, cfg.task.difficulty, length, 1, seed=0)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"'probe.lengths[{i}]' = {length}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Base model and warm start


def _warm_targets(cfg: ExperimentConfig) -> list[float | None]:
    return list(cfg.compare.warm_start_pass_rates) or [cfg.warm_start.target_pass_rate]


def prepare_experiment(
    cfg: ExperimentConfig, output_dir: Path, *, regime: bool = False
) -> list[dict[str, Any]]:
    """Build (or reuse) the base model and the warm start(s); return one ``{"target", "path", "pass_rate",
    "steps"}`` per warm start — all of ``compare.warm_start_pass_rates`` when ``regime``, else the recipe's one."""
    from llm_rl.distributed import process_state
    from llm_rl.models import resolve_model_path

    configure_threads(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Under `accelerate launch` the main process builds the tiny preset; the others then find it on disk.
    with process_state().main_process_first():
        base = resolve_model_path(cfg.model, output_dir, seed=WARM_START_SEED)
    if not cfg.warm_start.enabled:
        return [{"target": None, "path": base, "pass_rate": math.nan, "steps": 0}]
    from llm_rl.warm_start import warm_start

    targets = _warm_targets(cfg) if regime else [cfg.warm_start.target_pass_rate]
    out = []
    for target in targets:
        sub = cfg if target == cfg.warm_start.target_pass_rate else _with_target(cfg, target)
        folder = (
            output_dir / "warm_start"
            if not (regime and cfg.compare.warm_start_pass_rates)
            else (output_dir / "warm_start" / f"ws{target:g}")
        )
        res = warm_start(sub, base, folder, seed=WARM_START_SEED)
        out.append({"target": target, "path": str(res.path), "pass_rate": res.pass_rate, "steps": res.steps})
    return out


def _with_target(cfg: ExperimentConfig, target: float | None) -> ExperimentConfig:
    return dataclasses.replace(cfg, warm_start=dataclasses.replace(cfg.warm_start, target_pass_rate=target))


# ---------------------------------------------------------------------------------------------------------------
# One run


def run_dir_for(output_dir: Path, arm: str, seed: int, warm_target: float | None = None) -> Path:
    """``OUTPUT_DIR/runs/<arm>-seed<k>`` (or ``runs/ws<rate>/<arm>-seed<k>`` in the low-pass-rate regime)."""
    base = output_dir / "runs"
    if warm_target is not None:
        base = base / f"ws{warm_target:g}"
    return base / f"{arm}-seed{seed}"


def child_config(
    cfg: ExperimentConfig, arm: str, seed: int, run_path: Path, warm_target: float | None = None
) -> ExperimentConfig:
    """The resolved config of one run: the recipe with ``arm``, ``seed``, its own output dir, and a ``compare``
    section narrowed to itself (so adding a seed to the recipe does not invalidate the runs already done)."""
    sub = _with_target(cfg, warm_target) if warm_target is not None else cfg
    return dataclasses.replace(
        sub,
        arm=arm,
        seed=seed,
        output_dir=str(run_path),
        compare=dataclasses.replace(
            cfg.compare,
            arms=[arm],
            seeds=[seed],
            warm_start_pass_rates=[warm_target] if warm_target is not None else [],
        ),
    )


def run_arm(
    cfg: ExperimentConfig, run_path: Path, *, init_model: str, warm_start: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], bool]:
    """Train ``cfg.arm`` with ``cfg.seed`` into ``run_path`` unless it already finished.

    Returns ``(final_metrics, trained_now)``. The arm resumes an interrupted run from its own checkpoints
    (budget counters included); ``final_metrics.json`` is written last, so its presence means "finished".
    """
    from llm_rl.arms import get_arm
    from relabel_rl.rundir import RunDir, seed_everything

    final_file = run_path / FINAL_METRICS
    if final_file.exists():
        return json.loads(final_file.read_text()), False
    from llm_rl.distributed import Layout

    layout = Layout.current()  # under accelerate launch, only the main process writes the run's files
    if layout.is_main:
        run = RunDir.create(
            run_path,
            config=cfg,
            seeds={"seed": cfg.seed, "warm_start_seed": WARM_START_SEED},
            extra_meta={"init_model": init_model, "warm_start": dict(warm_start or {})},
        )
    layout.barrier()
    if not layout.is_main:
        run = RunDir(run_path)
    seed_everything(cfg.seed)
    final = get_arm(cfg.arm).train(cfg, run, init_model=init_model)
    if layout.is_main:
        run.write_json(FINAL_METRICS, dict(final or {}))
    layout.barrier()
    return dict(final or {}), True


# ---------------------------------------------------------------------------------------------------------------
# Commands


def cmd_train(argv: Sequence[str]) -> int:
    """``llm-rl train RECIPE [--section.key value ...]``: train the recipe's ``arm`` with its ``seed``.

    Writes ``OUTPUT_DIR/runs/<arm>-seed<k>/`` (config.yaml, meta.json, metrics.jsonl, checkpoints/, final/,
    final_metrics.json); rerunning the same command resumes an interrupted run.
    """

    def body() -> int:
        _, _, cfg = parse_command(argv, prog="llm-rl train", flags={}, usage=cmd_train.__doc__ or "")
        validate_experiment(cfg, arms=[cfg.arm])
        output_dir = Path(cfg.output_dir)
        run_path = run_dir_for(output_dir, cfg.arm, cfg.seed)
        child = child_config(cfg, cfg.arm, cfg.seed, run_path)
        _check_resumable(run_path, child)
        ws = prepare_experiment(cfg, output_dir)[0]
        print(f"[llm-rl train] {cfg.arm} seed {cfg.seed} from {ws['path']} -> {run_path}", file=sys.stderr)
        final, trained = run_arm(child, run_path, init_model=ws["path"], warm_start=ws)
        from llm_rl.distributed import process_state

        if not process_state().is_main_process:  # under `accelerate launch`, the main process reports
            return 0
        if not trained:
            print(f"[llm-rl train] {run_path} had already finished; nothing to do", file=sys.stderr)
        print(json.dumps({k: v for k, v in final.items() if not isinstance(v, dict | list)}, indent=2))
        print(f"run directory: {run_path}")
        return 0

    return run_command(body)


def _check_resumable(run_path: Path, cfg: ExperimentConfig) -> None:
    """Fail early (before the warm start) when ``run_path`` holds a run of a different config."""
    import yaml

    from relabel_rl.config import config_to_dict

    cfg_file = run_path / "config.yaml"
    if cfg_file.exists() and yaml.safe_load(cfg_file.read_text()) != config_to_dict(cfg):
        raise ConfigError(
            f"{run_path} holds a run with a different config; change 'output_dir' to start a different experiment"
        )


def resolve_checkpoint(target: Path) -> Path:
    """The policy directory of ``target``: a run directory's ``final/``, else ``target`` itself if it holds a
    model (``config.json`` or a saved Policy's ``value_head.json``)."""
    if (target / "final").is_dir():
        return target / "final"
    if (target / "config.json").exists() or (target / "value_head.json").exists():
        return target
    raise CommandError(f"{target}: neither a finished run directory (with final/) nor a model directory")


def cmd_eval(argv: Sequence[str]) -> int:
    """``llm-rl eval RUN_DIR_OR_MODEL [--recipe R] [--split test|train] [--out FILE] [--section.key value ...]``.

    Greedy pass@1 and sampled pass@k on the first ``eval.num_examples`` rows of the held-out split, drawn and
    sampled exactly as the training loop evaluates (`llm_rl.loop`), so a run's final pass@1 is reproduced. The
    recipe defaults to the run directory's ``config.yaml``.
    """

    def body() -> int:
        args = list(argv)
        if any(a in ("-h", "--help") for a in args):
            raise _Help("usage: llm-rl eval " + (cmd_eval.__doc__ or "").strip())
        if not args or args[0].startswith("--"):
            raise CommandError("llm-rl eval: missing RUN_DIR_OR_MODEL")
        target, rest = Path(args[0]), args[1:]
        if not target.exists():
            raise CommandError(f"llm-rl eval: {target} does not exist")
        own_flags = {"recipe": True, "split": True, "out": True}
        recipe_args: list[str] = []
        j = 0
        own: dict[str, str] = {}
        while j < len(rest):
            name = rest[j][2:].split("=", 1)[0] if rest[j].startswith("--") else ""
            if name in own_flags:
                if "=" in rest[j]:
                    own[name], j = rest[j].split("=", 1)[1], j + 1
                elif j + 1 < len(rest):
                    own[name], j = rest[j + 1], j + 2
                else:
                    raise CommandError(f"llm-rl eval: flag --{name} needs a value")
            else:
                recipe_args.append(rest[j])
                j += 1
        recipe = own.get("recipe")
        if recipe is None and (target / "config.yaml").exists():
            recipe = str(target / "config.yaml")
        cfg = load_config(ExperimentConfig, recipe, recipe_args)
        quiet_libraries()
        split = own.get("split", "test")
        if split not in ("test", "train"):
            raise CommandError(f"--split must be test or train, got {split!r}")
        validate_experiment(cfg, arms=[cfg.arm])
        checkpoint = resolve_checkpoint(target)
        result = evaluate_checkpoint(cfg, checkpoint, split=split)
        text = json.dumps(result, indent=2)
        print(text)
        if own.get("out"):
            Path(own["out"]).write_text(text + "\n")
        return 0

    return run_command(body)


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: Path, *, split: str = "test") -> dict[str, Any]:
    """Held-out pass@1 / pass@k of the policy in ``checkpoint`` (never counted in any training budget)."""
    import verifiers
    from llm_rl.evaluate import evaluate
    from llm_rl.loop import DATA_SEED
    from llm_rl.models import load_policy

    configure_threads(cfg)
    policy = load_policy(checkpoint, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden)
    policy.eval()
    timeout = cfg.task.verifier_timeout if cfg.task.verifier_timeout is not None else "auto"
    contained = verifiers.ContainedVerifier(verifiers.load(cfg.task.verifier), timeout=timeout)
    # the rows and sampling seed the training loop evaluates with (llm_rl.loop), so a run's final pass@1 reproduces
    data = contained.generate(cfg.eval.num_examples, seed=DATA_SEED, split=split, **cfg.task.difficulty)
    result = evaluate(
        policy,
        contained,
        data,
        k=cfg.eval.pass_k,
        temperature=cfg.eval.temperature,
        max_new_tokens=cfg.task.max_completion_tokens,
        batch_size=max(1, min(len(data), 64)),
        progress=False,
    )
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        **{k: v for k, v in dict(result).items() if not isinstance(v, list)},
    }
