"""Declared ranges (knob), finiteness, all problems at once, recipe-file errors, generated --help (issue #15)."""

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from relabel_rl.config import (
    DISTINCT,
    NONEMPTY,
    PATH_OR_HUB_ID,
    ConfigError,
    config_help,
    docstring_text,
    knob,
    load_config,
    validate,
)
from relabel_rl.rundir import RunDir, config_differences, pin_config


@dataclass(frozen=True)
class Search:
    num_simulations: int = knob(16, ge=1, help="simulations per move")
    c_puct: float = knob(1.25, gt=0.0, help="exploration constant")
    fraction: float = knob(0.25, ge=0.0, le=1.0, help="a share")
    root: Literal["puct", "gumbel"] = knob("puct", help="root rule")
    cap: int | None = knob(None, ge=1, help="optional cap")


@dataclass(frozen=True)
class Recipe:
    name: str = knob("run", check=NONEMPTY, help="run name")
    seeds: list[int] = knob([0], ge=0, check=DISTINCT, help="seeds, one run each")
    rates: list[float] = knob([], ge=0.0, le=1.0, help="rates")
    opponents: list[str] = knob(["random"], choices=("random", "gnugo"), help="who to play")
    extra: dict[str, float] = knob({}, help="free-form numbers")
    limit: float = knob(100.0, gt=0.0, help="budget")
    unbounded: float = knob(1.0, finite=False, help="may be inf")
    plain: float = 0.5  # no knob: still finite
    search: Search = field(default_factory=Search)


def test_knob_defaults_load_and_lists_are_private():
    cfg = load_config(Recipe, data={})
    assert cfg.search.num_simulations == 16 and cfg.seeds == [0]
    assert Recipe().seeds is not Recipe().seeds  # a list default is copied per instance
    meta = {f.name: f.metadata for f in dataclasses.fields(Search)}
    assert meta["num_simulations"]["help"] == "simulations per move" and meta["num_simulations"]["ge"] == 1


@pytest.mark.parametrize(
    "override, match",
    [
        (["--search.num_simulations", "0"], r"'search\.num_simulations' must be >= 1, got 0"),
        (["--search.c_puct", "0"], r"'search\.c_puct' must be > 0, got 0"),
        (["--search.fraction", "1.5"], r"'search\.fraction' must be in \[0, 1\], got 1\.5"),
        (["--search.cap", "0"], r"'search\.cap' must be >= 1"),
        (["--seeds", "[1, -2]"], r"'seeds\[1\]' must be >= 0, got -2"),
        (["--seeds", "[1, 1]"], r"'seeds' must be free of repeats"),
        (["--rates", "[0.5, 2]"], r"'rates\[1\]' must be in \[0, 1\]"),
        (["--opponents", "[random, gnugoo]"], r"'opponents\[1\]' must be one of \['random', 'gnugo'\]"),
        (["--name", ""], r"'name' must be non-empty"),
        # YAML reads 1e400 / 1.0e400 / .inf as inf and .nan as nan: a budget that never ends
        (["--limit", "1e400"], r"'limit' must be a finite number, got inf"),
        (["--limit", "1.0e400"], r"'limit' must be a finite number, got inf"),
        (["--limit", ".nan"], r"'limit' must be a finite number, got nan"),
        (["--plain", "-.inf"], r"'plain' must be a finite number, got -inf"),
        (["--rates", "[.nan]"], r"'rates\[0\]' must be a finite number"),
        (["--extra", "{a: .inf}"], r"'extra\.a' must be a finite number"),
    ],
)
def test_out_of_range_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Recipe, overrides=override)


def test_null_and_declared_infinite_values_pass():
    cfg = load_config(Recipe, overrides=["--search.cap", "null", "--unbounded", ".inf", "--limit", "1e3"])
    assert cfg.search.cap is None and cfg.unbounded == float("inf") and cfg.limit == 1000.0


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(
            Recipe,
            data={"search": {"num_simulations": 0, "root": "beam", "c_puct": "x"}, "limit": -1, "nope": 1},
        )
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = str(info.value)
    assert text.startswith("5 problems:")
    for key in ("'search.num_simulations'", "'search.root'", "'search.c_puct'", "'limit'", "'nope'"):
        assert key in text


def test_validate_checks_configs_built_in_code():
    cfg = load_config(Recipe, data={})
    validate(cfg)
    bad = dataclasses.replace(cfg, limit=float("inf"), search=dataclasses.replace(cfg.search, fraction=2.0))
    with pytest.raises(ConfigError) as info:
        validate(bad)
    assert [p.split("'")[1] for p in info.value.problems] == ["limit", "search.fraction"]


def test_binary_and_empty_recipes_are_one_line_errors(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10)
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, binary)
    assert str(binary) in str(info.value) and "not a UTF-8 text file" in str(info.value)
    assert "\n" not in str(info.value)
    for text in ("", "\n\n", "# only a comment\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml: the recipe is empty"):
            load_config(Recipe, empty)
    explicit = tmp_path / "defaults.yaml"
    explicit.write_text("{}\n")
    assert load_config(Recipe, explicit) == load_config(Recipe, data={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML") as info:
        load_config(Recipe, broken)
    assert "\n" not in str(info.value)


def test_path_or_hub_id_check(tmp_path):
    assert (
        PATH_OR_HUB_ID("tiny")
        and PATH_OR_HUB_ID("Qwen/Qwen2.5-0.5B-Instruct")
        and PATH_OR_HUB_ID(str(tmp_path))
    )
    for bad in ("/nonexistent/model", "./missing", "~/missing-model-dir", "a/b/c", ""):
        assert not PATH_OR_HUB_ID(bad), bad


def test_config_help_lists_every_key_with_type_default_range_and_help():
    text = config_help(Recipe)
    for line in (
        "--name str  (default run; non-empty)",
        "--seeds list[int]  (default [0]; >= 0; free of repeats)",
        "--limit float  (default 100.0; > 0)",
        "--search.num_simulations int  (default 16; >= 1)",
        "--search.fraction float  (default 0.25; in [0, 1])",
        "--search.root {puct,gumbel}  (default puct)",
        "--search.cap int | null  (default null; >= 1)",
        "--opponents list[str]  (default [random]; one of random, gnugo)",
    ):
        assert line in text, line
    assert "      simulations per move" in text


def test_docstring_text_drops_rest_markup():
    doc = """``llm-rl x RECIPE``: run :class:`~a.B` with `c`.

        Writes ``OUT/x``.
    """
    assert docstring_text(doc) == "llm-rl x RECIPE: run a.B with c.\n\nWrites OUT/x."


# --- run directories: a changed config names the keys ----------------------------------------------------------


def test_changed_config_names_every_differing_key_with_both_values(tmp_path):
    cfg = load_config(Recipe, data={})
    RunDir.create(tmp_path / "r", config=cfg)
    changed = load_config(Recipe, data={"limit": 50, "search": {"root": "gumbel"}})
    with pytest.raises(ConfigError) as info:
        RunDir.create(tmp_path / "r", config=changed)
    text = str(info.value)
    assert "2 key(s) differ" in text
    assert (
        "'limit': 100.0 recorded, 50.0 now" in text
        and '\'search.root\': "puct" recorded, "gumbel" now' in text
    )
    assert config_differences({"a": 1}, {"a": 1, "b": {"c": 2}}) == ["'b': absent recorded, {\"c\": 2} now"]


def test_pin_config_guards_a_shared_directory(tmp_path):
    shared = tmp_path / "warm_start"
    pin_config(shared, {"warm_start": {"max_steps": 10}}, what="warm start")
    pin_config(shared, {"warm_start": {"max_steps": 10}}, what="warm start")  # same config: fine
    with pytest.raises(
        ConfigError,
        match=r"warm start .*warm_start was made with a different config.*max_steps': 10 recorded, 20 now",
    ):
        pin_config(shared, {"warm_start": {"max_steps": 20}}, what="warm start")
    (shared / "config.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        pin_config(shared, {"warm_start": {"max_steps": 10}}, what="warm start")
