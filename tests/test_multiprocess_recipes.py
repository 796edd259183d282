"""The scaling recipes load and validate offline: accelerate launch configs, real-model LLM recipes, the
``python -m llm_rl.train --config`` argument form.

Recipes whose data comes from the hub (GSM8K) are validated as far as possible offline: the YAML against the
dataclasses, GRPO's settings by TRL's own `GRPOConfig`, the verifier path resolves; their rows are not generated.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from llm_rl.config import ExperimentConfig
from llm_rl.train import config_argv
from relabel_rl.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
LLM = sorted((ROOT / "recipes" / "llm").glob("*.yaml"))
HUB_DATA = {"qwen0.5b_gsm8k.yaml", "qwen1.5b_gsm8k.yaml", "qwen1.5b_gsm8k_lora.yaml"}
EXPECTED_TYPES = {
    "cpu_ddp.yaml": "MULTI_GPU",
    "ddp.yaml": "MULTI_GPU",
    "fsdp.yaml": "FSDP",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
}


def test_every_accelerate_config_is_shipped_and_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.name for p in ACCELERATE} == set(EXPECTED_TYPES)
    for path in ACCELERATE:
        cfg = load_config_from_file(str(path))
        assert cfg.distributed_type.value == EXPECTED_TYPES[path.name], path.name
        assert cfg.num_processes >= 2 and cfg.num_machines == 1
        assert cfg.use_cpu == (path.name == "cpu_ddp.yaml"), path.name
    zero = {
        p.name: load_config_from_file(str(p)).deepspeed_config["zero_stage"]
        for p in ACCELERATE
        if "zero" in p.name
    }
    assert zero == {"deepspeed_zero2.yaml": 2, "deepspeed_zero3.yaml": 3}


@pytest.mark.parametrize(
    "recipe", [p for p in LLM if p.name.startswith(("qwen", "tiny"))], ids=lambda p: p.name
)
def test_scaling_recipes_validate(recipe, monkeypatch):
    import verifiers
    from llm_rl.arms.grpo import grpo_config
    from llm_rl.experiment import validate_experiment

    if "vllm" in recipe.read_text() and importlib.util.find_spec("vllm") is None:
        # a vLLM recipe is refused at load where vLLM is missing (#15); validate the rest as if it were installed
        with pytest.raises(ConfigError, match=r"vLLM is not installed|vllm with vLLM installed"):
            load_config(ExperimentConfig, recipe)
        real = importlib.util.find_spec
        fake = importlib.machinery.ModuleSpec("vllm", None)
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: fake if name == "vllm" else real(name, *a)
        )
    cfg = load_config(ExperimentConfig, recipe)
    assert set(cfg.compare.arms) == {"grpo", "relabel", "mc_value"}
    if recipe.name in HUB_DATA:  # no hub here: everything but generating the rows
        verifiers.load(cfg.task.verifier)
        grpo_config(cfg, "/tmp/unused")
    else:
        validate_experiment(cfg, arms=cfg.compare.arms, probe=cfg.compare.probe_variance)
    if recipe.name.startswith("qwen"):
        assert cfg.model.name_or_path.startswith("Qwen/Qwen2.5-") and cfg.model.dtype == "bfloat16"
        assert cfg.model.generation_backend == "vllm" and cfg.grpo.trl.get("use_vllm") is True
    assert cfg.model.lora.enabled == ("lora" in recipe.name)


def test_config_flag_becomes_the_positional_recipe():
    assert config_argv(["--config", "r.yaml", "--arm", "grpo"]) == ["r.yaml", "--arm", "grpo"]
    assert config_argv(["--seed", "3", "--config=r.yaml"]) == ["r.yaml", "--seed", "3"]
    assert config_argv(["r.yaml", "--seed", "3"]) == ["r.yaml", "--seed", "3"]  # the console-script form too
    with pytest.raises(SystemExit):
        config_argv(["--config"])
    with pytest.raises(SystemExit):
        config_argv(["--config", "a.yaml", "--config", "b.yaml"])


@pytest.mark.parametrize("env", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_launch_is_refused_for_the_hand_written_arms_before_any_work(env, monkeypatch):
    from llm_rl.experiment import validate_experiment
    from relabel_rl.config import ConfigError

    cfg = load_config(ExperimentConfig, ROOT / "recipes" / "llm" / "tiny_ddp_cpu.yaml")
    monkeypatch.setenv(env, "true")
    with pytest.raises(
        ConfigError, match=r"relabel and mc_value cannot run under (FSDP|DeepSpeed).*ddp\.yaml"
    ):
        validate_experiment(cfg, arms=["grpo", "relabel", "mc_value"])
    if env == "ACCELERATE_USE_FSDP":  # (under DeepSpeed, TRL's config itself needs the deepspeed extra)
        validate_experiment(cfg, arms=["grpo"])  # GRPO: TRL drives the sharding itself
    monkeypatch.delenv(env)
    validate_experiment(cfg, arms=["relabel", "mc_value"])
