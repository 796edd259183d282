from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from relabel_rl.config import ConfigError, load_config, parse_overrides, to_yaml


@dataclass(frozen=True)
class Search:
    num_simulations: int = 16
    c_puct: float = 1.25
    root: Literal["puct", "gumbel"] = "puct"

    def __post_init__(self):
        if self.num_simulations < 1:
            raise ValueError("num_simulations must be >= 1")


@dataclass(frozen=True)
class Recipe:
    name: str = "run"
    seeds: list[int] = field(default_factory=lambda: [0])
    out: Path | None = None
    search: Search = field(default_factory=Search)
    extra: dict[str, float] = field(default_factory=dict)


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: a\nsearch:\n  num_simulations: 8\n  root: gumbel\nseeds: [1, 2]\n")
    cfg = load_config(Recipe, p, ["--search.c_puct", "2", "--name=b", "--out", "runs/x"])
    assert cfg.name == "b"
    assert cfg.seeds == [1, 2]
    assert cfg.search == Search(num_simulations=8, c_puct=2.0, root="gumbel")
    assert cfg.out == Path("runs/x")
    assert isinstance(cfg.search.c_puct, float)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("search:\n  num_simulation: 8\n")
    with pytest.raises(ConfigError, match=r"search\.num_simulation.*did you mean 'search\.num_simulations'"):
        load_config(Recipe, p)


@pytest.mark.parametrize(
    "override, match",
    [
        (["--search.num_simulations", "many"], r"'search\.num_simulations' must be an integer"),
        (["--search.num_simulations", "true"], r"'search\.num_simulations' must be an integer"),
        (["--search.root", "beam"], r"'search\.root' must be one of \['puct', 'gumbel'\]"),
        (["--seeds", "3"], r"'seeds' must be a list"),
        (["--seeds", "[1, x]"], r"'seeds\[1\]' must be an integer"),
        (["--search.num_simulations", "0"], r"search: num_simulations must be >= 1"),
        (["--nope", "1"], r"unknown key 'nope'"),
        (["--name"], r"has no value"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Recipe, overrides=override)


def test_yaml_round_trip():
    cfg = load_config(Recipe, data={"search": {"root": "gumbel"}, "out": "x", "extra": {"a": 1}})
    again = load_config(Recipe, data=yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_parse_overrides_types():
    assert parse_overrides(["--a.b", "3", "--c", "0.5", "--d", "true", "--e", "hi"]) == {
        "a.b": 3,
        "c": 0.5,
        "d": True,
        "e": "hi",
    }


def test_missing_recipe_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(Recipe, tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(Recipe, p)


def test_dotless_scientific_notation_is_a_number():
    # YAML 1.1 (PyYAML) reads `3e-4` as a string; a recipe author means a float.
    cfg = load_config(Recipe, data={"search": {"c_puct": "3e-4", "num_simulations": "1e2"}})
    assert cfg.search.c_puct == 3e-4
    assert cfg.search.num_simulations == 100
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(Recipe, data={"search": {"c_puct": "fast"}})


def test_a_partial_sub_section_keeps_the_fields_own_defaults():
    """A section whose default is a customised sub-section (the relabeller's PUCT settings) keeps the rest of
    that default when a recipe gives part of it, not the sub-section class's defaults."""

    @dataclass(frozen=True)
    class Arm:
        search: Search = field(default_factory=lambda: Search(c_puct=3.0, root="gumbel"))

    @dataclass(frozen=True)
    class Top:
        arm: Arm = field(default_factory=Arm)

    cfg = load_config(Top, data={"arm": {"search": {"num_simulations": 4}}})
    assert cfg.arm.search == Search(num_simulations=4, c_puct=3.0, root="gumbel")
    assert load_config(Top, overrides=["--arm.search.c_puct", "1.0"]).arm.search == Search(
        c_puct=1.0, root="gumbel"
    )
