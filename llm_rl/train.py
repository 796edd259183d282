"""``llm-rl train`` and ``llm-rl eval``; ``python -m llm_rl.train --config RECIPE [--section.key value ...]``.

`accelerate launch` starts a Python module or script in every process, not a console script, so the multi-GPU
form of `llm-rl train RECIPE` is::

    accelerate launch --config_file recipes/accelerate/ddp.yaml -m llm_rl.train --config recipes/llm/R.yaml

``--config R.yaml`` names the recipe (the console script takes it as the first positional argument; both forms
are accepted here); every other flag is a recipe override or a flag of `llm-rl train`, unchanged.
`llm_rl.commands.module_main` does the same for any `llm-rl` subcommand (``python -m llm_rl.compare --config ...``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from llm_rl.commands import (
    COMMAND_FLAGS,
    CommandError,
    Help,
    config_argv,
    module_main,
    parse_command,
    recorded_recipe,
    run_command,
)
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import (
    check_resumable,
    child_config,
    evaluate_checkpoint,
    prepare_experiment,
    quiet_libraries,
    run_arm,
    run_dir_for,
    validate_experiment,
)
from llm_rl.harness.distributed import is_main, main_print
from relabel_rl.config import load_config

__all__ = ["cmd_eval", "cmd_train", "config_argv", "main", "resolve_checkpoint"]


def cmd_train(argv: Sequence[str]) -> int:
    """``llm-rl train RECIPE [--section.key value ...]``: train the recipe's ``arm`` with its ``seed``.

    Writes ``OUTPUT_DIR/runs/<arm>-seed<k>/`` (config.yaml, meta.json, metrics.jsonl, checkpoints/, final/,
    final_metrics.json); rerunning the same command resumes an interrupted run.
    """

    def body() -> int:
        _, _, cfg = parse_command(
            argv, prog="llm-rl train", flags=COMMAND_FLAGS["train"], usage=cmd_train.__doc__ or ""
        )
        quiet_libraries()
        validate_experiment(cfg, arms=[cfg.arm])
        output_dir = Path(cfg.output_dir)
        run_path = run_dir_for(output_dir, cfg.arm, cfg.seed)
        child = child_config(cfg, cfg.arm, cfg.seed, run_path)
        check_resumable(run_path, child)
        ws = prepare_experiment(cfg, output_dir)[0]
        main_print(
            f"[llm-rl train] {cfg.arm} seed {cfg.seed} from {ws['path']} -> {run_path}", file=sys.stderr
        )
        final, trained = run_arm(child, run_path, init_model=ws["path"], warm_start=ws)
        if not is_main():  # under `accelerate launch`, the main process reports
            return 0
        if not trained:
            print(f"[llm-rl train] {run_path} had already finished; nothing to do", file=sys.stderr)
        print(json.dumps({k: v for k, v in final.items() if not isinstance(v, dict | list)}, indent=2))
        print(f"run directory: {run_path}")
        return 0

    return run_command(body)


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
    sampled exactly as the harness evaluates (`llm_rl.harness.session`), so a run's final pass@1 is reproduced.
    Without ``--recipe`` the task and settings are the ones recorded in the nearest ``config.yaml`` at or above
    RUN_DIR_OR_MODEL (a run directory's, a comparison's, a warm start's); a model outside every run directory is
    evaluated on the built-in defaults, and the command says which task and how many rows it used.
    """

    def body() -> int:
        args = list(argv)
        if any(a in ("-h", "--help") for a in args):
            raise Help("usage: llm-rl eval " + (cmd_eval.__doc__ or "").strip())
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
        if recipe is None:
            found = recorded_recipe(target)
            recipe = str(found) if found is not None else None
        cfg = load_config(ExperimentConfig, recipe, recipe_args)
        quiet_libraries()
        split = own.get("split", "test")
        if split not in ("test", "train"):
            raise CommandError(f"--split must be test or train, got {split!r}")
        validate_experiment(cfg, arms=[cfg.arm])
        checkpoint = resolve_checkpoint(target)
        print(_eval_source(cfg, recipe, own.get("recipe") is not None, split), file=sys.stderr)
        result = {
            "recipe": recipe,
            "task": cfg.task.verifier,
            **evaluate_checkpoint(cfg, checkpoint, split=split),
        }
        text = json.dumps(result, indent=2)
        print(text)
        if own.get("out"):
            Path(own["out"]).write_text(text + "\n")
        return 0

    return run_command(body)


def _eval_source(cfg: ExperimentConfig, recipe: str | None, given: bool, split: str) -> str:
    """One line saying which task, rows and settings `llm-rl eval` uses, and where they come from."""
    rows = (
        f"task.data.path {cfg.task.data.path}"
        if cfg.task.data.path
        else f"difficulty {cfg.task.difficulty or '{}'}"
    )
    what = (
        f"task {cfg.task.verifier} ({rows}), the first {cfg.eval.num_examples} {split} rows, greedy pass@1 and "
        f"pass@{cfg.eval.pass_k} at temperature {cfg.eval.temperature:g}"
    )
    if recipe is None:
        return (
            f"[llm-rl eval] the model is inside no run directory (no config.yaml with a task above it) and no "
            f"--recipe was given: evaluating on the built-in defaults, {what}; pass --recipe R (or "
            "--task.* overrides) for the task it was trained on"
        )
    return f"[llm-rl eval] {what}, from {'--recipe ' if given else 'the run directory: '}{recipe}"


def main(argv: Sequence[str] | None = None) -> int:
    return module_main(cmd_train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
