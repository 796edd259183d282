"""The Go recipe: every field declares its help and range; bad values stop before any work (issue #15, #16)."""

import dataclasses
import typing
from pathlib import Path

import pytest

from go_baseline import cli
from go_baseline.config import GoConfig
from relabel_rl.config import ConfigError, load_config

RECIPES = sorted(Path(__file__).resolve().parents[1].glob("recipes/go/*.yaml"))
# Bounded by a rule between two fields instead (|komi| <= size * size), in BoardSection.__post_init__.
CROSS_FIELD_BOUNDED = {"board.komi"}


def _leaves(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], f


def test_every_field_has_help_and_every_number_a_range():
    leaves = list(_leaves(GoConfig))
    assert len(leaves) > 40
    for key, tp, f in leaves:
        assert f.metadata.get("help"), f"{key} has no help"
        numeric = tp in (int, float) or set(typing.get_args(tp)) & {int, float}
        if numeric and key not in CROSS_FIELD_BOUNDED:
            assert {"ge", "gt", "le", "lt"} & set(f.metadata), f"{key} declares no range"


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_pass(recipe):
    load_config(GoConfig, recipe)


@pytest.mark.parametrize(
    "override, match",
    [
        (["--seed", "-1"], r"'seed' must be in \[0, 2\*\*63\), got -1"),
        (["--board.komi", "1e400"], r"'board\.komi' must be a finite number, got inf"),
        (["--board.komi", "26"], r"'board\.komi' \(26\) exceeds the board's 25 points"),
        (["--net.blocks", "0"], r"'net\.blocks' must be >= 1"),
        (["--selfplay.playout_cap_fraction", "0"], r"'selfplay\.playout_cap_fraction' must be in \(0, 1\]"),
        (["--train.momentum", "1"], r"'train\.momentum' must be in \[0, 1\)"),
        (["--train.lr", ".nan"], r"'train\.lr' must be a finite number"),
        (["--eval.gnugo_level", "11"], r"'eval\.gnugo_level' must be in \[0, 10\]"),
        (["--eval.opponents", "[random, random]"], r"'eval\.opponents' must be free of repeats"),
        (["--max_minutes", "0"], r"'max_minutes' must be > 0"),
        (["--run_dir", ""], r"'run_dir' must be non-empty"),
    ],
)
def test_bad_values_are_refused_at_load(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(GoConfig, RECIPES[0], override)


def test_cli_refuses_a_bad_seed_before_creating_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", str(RECIPES[0]), "--run_dir", str(run_dir), "--seed", "-1", "--board.komi", "1e400"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'seed'" in err and "'board.komi'" in err
    assert not run_dir.exists()


@pytest.mark.parametrize("command", ["train", "selfplay", "eval"])
def test_help_lists_every_override_key(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for key, _, _ in _leaves(GoConfig):
        assert f"--{key} " in out, key
    assert "--board.size int  (default 5; in [5, 19])" in out
    assert "--selfplay.search {puct,gumbel}  (default gumbel)" in out
