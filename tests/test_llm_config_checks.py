"""The `llm-rl` recipe checks itself before any work (issue #15, Configuration): every field declares its help and
range, bad values are refused at load time naming the key, vLLM is asked for only where it is installed and used,
and the shared folders of an output directory (base model, warm start) and its run directories refuse a different
config naming the keys that differ."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
import typing
from pathlib import Path

import pytest
import yaml

from llm_rl import cli
from llm_rl.arms.grpo import GrpoArm
from llm_rl.config import ExperimentConfig
from llm_rl.experiment import check_resumable, validate_experiment
from llm_rl.model import resolve_model_path
from llm_rl.warm_start import warm_start
from relabel_rl.config import ConfigError, config_to_dict, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Sections whose classes belong to another package and check their ranges in __post_init__ (tree_search's
# PuctConfig / GumbelConfig): their keys still load, type-check and appear in --help.
FOREIGN_SECTIONS = ("relabel.puct.", "relabel.gumbel.")


def _leaves(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], f


def test_every_field_has_help_and_every_number_a_range():
    leaves = [leaf for leaf in _leaves(ExperimentConfig) if not leaf[0].startswith(FOREIGN_SECTIONS)]
    assert len(leaves) > 60
    for key, tp, f in leaves:
        assert f.metadata.get("help"), f"{key} has no help"
        numeric = tp in (int, float) or set(typing.get_args(tp)) & {int, float}
        if numeric:
            assert {"ge", "gt", "le", "lt"} & set(f.metadata), f"{key} declares no range"


@pytest.mark.parametrize(
    "override, match",
    [
        (["--optim.prompts_per_step", "0"], r"'optim\.prompts_per_step' must be >= 1, got 0"),
        (["--optim.checkpoint_every", "0"], r"'optim\.checkpoint_every' must be >= 1, got 0"),
        (["--optim.learning_rate", "-1"], r"'optim\.learning_rate' must be > 0, got -1"),
        (["--optim.prompt_chunks", "0"], r"'optim\.prompt_chunks' must be >= 1"),
        (["--warm_start.eval_examples", "0"], r"'warm_start\.eval_examples' must be >= 1, got 0"),
        (["--warm_start.batch_size", "0"], r"'warm_start\.batch_size' must be >= 1, got 0"),
        (["--warm_start.max_steps", "-3"], r"'warm_start\.max_steps' must be >= 1, got -3"),
        (["--warm_start.target_pass_rate", "1.5"], r"'warm_start\.target_pass_rate' must be in \[0, 1\]"),
        (["--eval.temperature", "-1"], r"'eval\.temperature' must be > 0, got -1"),
        (["--eval.pass_k", "0"], r"'eval\.pass_k' must be >= 1"),
        (
            ["--model.name_or_path", "/nonexistent/model"],
            r"'model\.name_or_path' must be an existing local path",
        ),
        (
            ["--model.tiny_num_heads", "3"],
            r"'model\.tiny_hidden_size' \(64\) must be a multiple of 'model\.tiny_num",
        ),
        (["--model.lora.dropout", "1.0"], r"'model\.lora\.dropout' must be in \[0, 1\)"),
        (["--budget.limit", "1e400"], r"'budget\.limit' must be a finite number, got inf"),
        (["--budget.eval_every", "5e4"], r"'budget\.eval_every' \(50000\) exceeds 'budget\.limit' \(40000\)"),
        (["--seed", "-1"], r"'seed' must be in \[0, 2\*\*63\), got -1"),
        (["--compare.seeds", "[0, 0]"], r"'compare\.seeds' must be non-empty and free of repeats"),
        (["--compare.arms", "[]"], r"'compare\.arms' must be non-empty"),
        (["--relabel.num_candidates", "0"], r"'relabel\.num_candidates' must be >= 1"),
        (["--mc_value.clip_epsilon", "0"], r"'mc_value\.clip_epsilon' must be > 0"),
        (["--task.verifier_timeout", "0"], r"'task\.verifier_timeout' must be > 0"),
        (["--output_dir", ""], r"'output_dir' must be non-empty"),
    ],
)
def test_bad_values_are_refused_at_load_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ExperimentConfig, overrides=override)


def test_the_cli_refuses_at_once_and_writes_nothing(tmp_path, capsys):
    """`--optim.prompts_per_step 0` used to hang at 0 tokens and `--optim.checkpoint_every 0` to divide by zero after
    28 s; `warm_start.*`, learning rate, temperature and model path errors came after a warm start."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out")}))
    for bad in (
        ["--optim.prompts_per_step", "0"],
        ["--optim.checkpoint_every", "0"],
        ["--warm_start.max_steps", "-3"],
        ["--model.name_or_path", "/nonexistent/model"],
    ):
        t0 = time.perf_counter()
        assert cli.main(["train", str(recipe), *bad]) == 2
        assert time.perf_counter() - t0 < 20  # the recipe only: no model, no warm start
        assert bad[0][2:] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- vLLM -------------------------------------------------------------------------------------------------------


def _vllm(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "vllm":
            return importlib.machinery.ModuleSpec("vllm", None) if installed else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_vllm_without_vllm_installed_is_refused_at_load(monkeypatch):
    _vllm(monkeypatch, installed=False)
    with pytest.raises(
        ConfigError, match=r"'model\.generation_backend' must be hf, or vllm with vLLM installed"
    ):
        load_config(ExperimentConfig, overrides=["--model.generation_backend", "vllm"])
    with pytest.raises(ConfigError, match=r"'grpo\.trl\.use_vllm' is true but vLLM is not installed"):
        load_config(ExperimentConfig, overrides=["--grpo.trl.use_vllm", "true"])


def test_grpo_with_the_vllm_backend_is_not_silently_ignored(monkeypatch):
    _vllm(monkeypatch, installed=True)
    cfg = load_config(ExperimentConfig, overrides=["--model.generation_backend", "vllm", "--arm", "grpo"])
    with pytest.raises(
        ConfigError, match=r"'model\.generation_backend: vllm' does not reach the GRPO arm.*use_vllm"
    ):
        GrpoArm.validate(cfg)
    with pytest.raises(ConfigError, match=r"does not reach the GRPO arm"):
        validate_experiment(cfg, arms=["grpo"])
    validate_experiment(cfg, arms=["relabel"])  # the hand-written arms do use the backend


# --- shared folders and run directories -------------------------------------------------------------------------


def _tiny(tmp: Path, **warm) -> ExperimentConfig:
    return load_config(
        ExperimentConfig,
        data={
            "output_dir": str(tmp),
            "model": {"tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
            "task": {"difficulty": {"min_steps": 1, "max_steps": 1}, "max_completion_tokens": 24},
            "warm_start": {
                "target_pass_rate": None,
                "max_steps": 2,
                "eval_every": 2,
                "batch_size": 4,
                **warm,
            },
        },
    )


def test_a_second_run_with_other_warm_start_settings_is_refused_not_retrained(tmp_path):
    cfg = _tiny(tmp_path)
    base = resolve_model_path(cfg.model, tmp_path)
    first = warm_start(cfg, base, tmp_path / "warm_start", seed=0, progress=False)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    other = _tiny(tmp_path, max_steps=4, learning_rate=1e-3)
    with pytest.raises(ConfigError) as info:
        warm_start(other, base, tmp_path / "warm_start", seed=0, progress=False)
    text = str(info.value)
    assert "warm start" in text and "2 key(s) differ" in text
    assert "'warm_start.max_steps': 2 recorded, 4 now" in text and "'warm_start.learning_rate'" in text
    assert (first.path / "model.safetensors").stat().st_mtime_ns == stamp  # untouched
    assert (
        warm_start(cfg, base, tmp_path / "warm_start", seed=0, progress=False) == first
    )  # same config: reused
    with pytest.raises(ConfigError, match=r"'model\.tiny_hidden_size': 32 recorded, 64 now"):
        resolve_model_path(dataclasses.replace(cfg.model, tiny_hidden_size=64), tmp_path)


def test_a_changed_run_config_names_the_differing_key(tmp_path):
    cfg = _tiny(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    check_resumable(tmp_path / "run", cfg)  # the same config resumes
    changed = load_config(
        ExperimentConfig, data=config_to_dict(cfg), overrides=["--optim.learning_rate", "0.002"]
    )
    with pytest.raises(
        ConfigError, match=r"holds a run with a different config.*'optim\.learning_rate': 0\.001 rec"
    ):
        check_resumable(tmp_path / "run", changed)
