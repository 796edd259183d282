"""The command-line plumbing every `llm-rl` command shares — and nothing heavy, so a bad recipe is reported in a
second, before torch's model code, transformers or TRL load.

* :func:`parse_command` — ``RECIPE [--own-flag value] [--section.key value ...]``: the command's own flags are
  taken out, everything else is a recipe override for `relabel_rl.load_config` (so ``--seed 3`` or
  ``--relabel.puct.num_simulations 8`` work on every command);
* :func:`run_command` — a user error is one ``error: ...`` line and exit status 2, not a traceback;
* :func:`config_argv` / :func:`module_main` — the ``python -m llm_rl.train --config R.yaml`` form that
  ``accelerate launch`` needs;
* :func:`recorded_recipe` — the recipe a model was trained with, when it lies inside a run directory (what
  ``llm-rl eval MODEL`` uses without ``--recipe``).

The commands themselves: `llm_rl.train` (``train``, ``eval``), `llm_rl.compare` (``compare``, ``probe-variance``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from llm_rl.config import ExperimentConfig
from relabel_rl.config import ConfigError, load_config

__all__ = [
    "COMMAND_FLAGS",
    "CommandError",
    "Help",
    "config_argv",
    "module_main",
    "parse_command",
    "recorded_recipe",
    "run_command",
]


# Each recipe command's own flags (name -> takes a value); everything else on its command line is a recipe
# override. One table, read by the command and by `llm_rl.cli`'s early check of the recipe.
COMMAND_FLAGS: dict[str, dict[str, bool]] = {
    "train": {},
    "compare": {"report_only": False, "no_progress": False, "workers": True},
    "tune": {"workers": True},
    "probe-variance": {"checkpoint": True, "out": True, "arms": True, "workers": True},
}


class CommandError(Exception):
    """A user-facing error: printed as ``error: ...`` and the command exits with status 2."""


class Help(Exception):
    """``--help``: the usage text, printed with exit status 0."""


def run_command(body: Callable[[], int]) -> int:
    """Run a command body, turning user errors into a one-line message and exit status 2 (130 on Ctrl-C)."""
    try:
        return int(body() or 0)
    except Help as h:
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
        raise Help(f"usage: {prog} " + usage.strip())
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
    return recipe, own, cfg


def config_argv(argv: Sequence[str]) -> list[str]:
    """Move ``--config PATH`` (or ``--config=PATH``) to the front as the positional recipe."""
    args = list(argv)
    recipe: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--config":
            if i + 1 >= len(args):
                raise SystemExit("error: --config needs a recipe path")
            value, i = args[i + 1], i + 2
        elif tok.startswith("--config="):
            value, i = tok.split("=", 1)[1], i + 1
        else:
            rest.append(tok)
            i += 1
            continue
        if recipe is not None:
            raise SystemExit(f"error: --config given twice ({recipe!r} and {value!r})")
        recipe = value
    return [recipe, *rest] if recipe is not None else rest


def module_main(command: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run an `llm-rl` subcommand function with ``--config`` turned into its positional recipe (the form
    ``accelerate launch -m llm_rl.train --config R.yaml`` needs: `llm_rl.train`, `llm_rl.compare`)."""
    return int(command(config_argv(sys.argv[1:] if argv is None else argv)) or 0)


def recorded_recipe(model: str | Path) -> Path | None:
    """The ``config.yaml`` that records the task ``model`` was trained on: the nearest one in ``model`` or a
    folder above it that holds a ``task`` section (a run directory's, a comparison's, a shared warm start's), or
    None when the model lies inside none of them.

    A run directory ``runs/<arm>-seed<k>/`` records its whole resolved recipe, so evaluating its ``final/`` or a
    ``checkpoints/checkpoint-N/`` reads the task it trained on; ``OUTPUT_DIR/warm_start/model`` finds the warm
    start's own record (model, task, warm-start settings).
    """
    here = Path(model).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "config.yaml"
        if not candidate.is_file():
            continue
        try:
            recorded = yaml.safe_load(candidate.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # not a recipe this toolkit wrote; keep looking
        if isinstance(recorded, dict) and isinstance(recorded.get("task"), dict):
            return candidate
    return None
