"""``python -m llm_rl.train --config RECIPE [--section.key value ...]``: `llm-rl train` as a runnable module.

`accelerate launch` starts a Python module or script in every process, not a console script, so the multi-GPU
form of `llm-rl train RECIPE` is::

    accelerate launch --config_file recipes/accelerate/ddp.yaml -m llm_rl.train --config recipes/llm/R.yaml

``--config R.yaml`` names the recipe (the console script takes it as the first positional argument; both forms
are accepted here); every other flag is a recipe override or a flag of `llm-rl train`, unchanged.
`module_main` does the same for any `llm-rl` subcommand (``python -m llm_rl.compare --config ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["config_argv", "main", "module_main"]


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
    """Run an `llm-rl` subcommand function with ``--config`` turned into its positional recipe."""
    return int(command(config_argv(sys.argv[1:] if argv is None else argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    from llm_rl.commands import cmd_train

    return module_main(cmd_train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
