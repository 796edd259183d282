"""`llm-rl`: the command line of the LLM side. Each subcommand lives in its own module and parses its own flags.

llm-rl train RECIPE [--key value ...]       one arm
llm-rl eval RUN_DIR_OR_MODEL [...]          held-out pass@1 / pass@k
llm-rl compare RECIPE [--key value ...]     all arms x seeds at equal budget -> report.md
llm-rl tune RECIPE [--key value ...]        per-arm hyper-parameters on the validation split -> tuned.yaml
llm-rl probe-variance RECIPE [...]          gradient-variance probe binned by task length
llm-rl tasks                                list verifiers (built-in and plugins)
llm-rl make-dataset NAME --n N --seed S --out DIR
llm-rl verify --verifier NAME --input completions.jsonl

The subcommand's module is imported only when it runs (`llm-rl tasks` never loads torch), and a recipe command's
recipe is loaded and checked first (`llm_rl.commands`, light), so a typo costs a second, not the import of the
model stack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from relabel_rl.config import ConfigError, config_help, docstring_text
from relabel_rl.environment import foreign_verifiers, quiet_broken_pipe

# subcommand -> (module, function, one-line help, whether its first argument is a recipe: its own flags are then
# `llm_rl.commands.COMMAND_FLAGS[subcommand]`)
COMMANDS: dict[str, tuple[str, str, str, bool]] = {
    "train": ("llm_rl.train", "cmd_train", "train one arm from a recipe", True),
    "eval": ("llm_rl.train", "cmd_eval", "evaluate a checkpoint on the held-out split", False),
    "compare": (
        "llm_rl.compare",
        "cmd_compare",
        "run all arms x seeds at equal budget and write a report",
        True,
    ),
    "tune": (
        "llm_rl.tune",
        "cmd_tune",
        "pick per-arm hyper-parameters on the validation split (-> a tuned recipe for compare)",
        True,
    ),
    "probe-variance": (
        "llm_rl.compare",
        "cmd_probe_variance",
        "gradient variance vs task length",
        True,
    ),
    "tasks": ("verifiers.cli", "cmd_tasks", "list available verifiers / task generators", False),
    "make-dataset": ("verifiers.cli", "cmd_make_dataset", "generate a task dataset to disk", False),
    "verify": ("verifiers.cli", "cmd_verify", "score completions from a JSONL file", False),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: llm-rl COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_, _) in COMMANDS.items()]
    lines += ["", "Run 'llm-rl COMMAND --help' for a command's flags."]
    return "\n".join(lines)


# Commands whose flags include every recipe key: their --help lists the keys (type, default, range, help).
RECIPE_COMMANDS = ("train", "eval", "compare", "tune", "probe-variance")


def _recipe_help(handler) -> str:
    recipe = importlib.import_module("llm_rl.config").ExperimentConfig  # by name: see `main`
    return f"usage: {docstring_text(handler.__doc__ or '')}\n\n{config_help(recipe)}"


def main(argv: Sequence[str] | None = None) -> int:
    quiet_broken_pipe()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"llm-rl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    clash = foreign_verifiers()  # PrimeIntellect's `verifiers` shares our import name: one clear stop
    if clash is not None:
        print(f"error: {clash}", file=sys.stderr)
        return 2
    module, func, _, takes_recipe = COMMANDS[name]
    if takes_recipe and not any(a in ("-h", "--help") for a in rest):
        # The recipe first, the command's module second. By name, like the commands: `llm-rl tasks` loads
        # neither the recipe types nor torch.
        commands = importlib.import_module("llm_rl.commands")
        try:
            flags = commands.COMMAND_FLAGS[name]
            commands.parse_command(rest, prog=f"llm-rl {name}", flags=flags, usage="")
        except (ConfigError, commands.CommandError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    handler = getattr(importlib.import_module(module), func)
    if name in RECIPE_COMMANDS and any(a in ("-h", "--help") for a in rest):
        print(_recipe_help(handler))
        return 0
    return int(handler(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
