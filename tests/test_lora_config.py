"""A full `peft.LoraConfig` through the recipe (issue #16): ``model.lora`` takes ``target_modules: all-linear`` and
any other LoraConfig field under ``model.lora.peft``, validated by PEFT itself before any model loads, and an arm
trains with it (the value head beside the adapter)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig

from llm_rl.config import ExperimentConfig, LoraSettings
from llm_rl.experiment import validate_experiment
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model, load_policy, lora_config
from relabel_rl.config import ConfigError, load_config
from relabel_rl.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FULL = {
    "enabled": True,
    "r": 4,
    "alpha": 8,
    "target_modules": "all-linear",
    "peft": {
        "use_rslora": True,
        "bias": "lora_only",
        "rank_pattern": {"down_proj": 2},
        "init_lora_weights": "gaussian",
    },
}


def test_a_full_lora_config_reaches_peft():
    cfg = load_config(ExperimentConfig, data={"model": {"lora": FULL}})
    config = lora_config(cfg.model.lora)
    assert isinstance(config, LoraConfig)
    assert config.target_modules == "all-linear" and config.use_rslora and config.bias == "lora_only"
    assert config.rank_pattern == {"down_proj": 2} and config.init_lora_weights == "gaussian"
    assert (config.r, config.lora_alpha, config.task_type) == (4, 8, "CAUSAL_LM")
    cli_form = ["--model.lora.target_modules", "all-linear", "--model.lora.peft.use_dora", "true"]
    assert lora_config(load_config(ExperimentConfig, overrides=cli_form).model.lora).use_dora


@pytest.mark.parametrize(
    "peft, match",
    [
        (
            {"use_rslroa": True},
            r"unknown peft\.LoraConfig field 'model\.lora\.peft\.use_rslroa' \(did you mean .*use_rslora",
        ),
        ({"lora_alpha": 32}, r"'model\.lora\.peft\.lora_alpha' is set by 'model\.lora\.alpha', not here"),
        ({"task_type": "SEQ_CLS"}, r"'model\.lora\.peft\.task_type' is set by the policy"),
        # PEFT's own check: layers_pattern needs layers_to_transform
        (
            {"layers_pattern": "layers"},
            r"'model\.lora\.peft': peft\.LoraConfig refused it: .*layers_to_transform",
        ),
    ],
)
def test_bad_lora_fields_are_refused_before_any_model_loads(peft, match):
    cfg = load_config(ExperimentConfig, data={"model": {"lora": {"enabled": True, "peft": peft}}})
    with pytest.raises(ConfigError, match=match):
        validate_experiment(cfg, arms=["relabel"])
    validate_experiment(
        load_config(ExperimentConfig, data={"model": {"lora": {"enabled": False, "peft": peft}}}),
        arms=["relabel"],
    )  # off: not used, not checked


def test_an_arm_trains_with_a_full_lora_config(tmp_path):
    base = str(build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=2, num_heads=2))
    cfg = load_config(
        ExperimentConfig,
        data={
            "output_dir": str(tmp_path / "run"),
            "arm": "relabel",
            "model": {"lora": FULL},
            "task": {
                "difficulty": {"min_steps": 1, "max_steps": 2},
                "train_size": 16,
                "test_size": 4,
                "max_steps": 3,
                "max_step_tokens": 8,
                "max_completion_tokens": 24,
            },
            "warm_start": {"enabled": False},
            "budget": {"axis": "generated_tokens", "limit": 200, "eval_every": 200},
            "eval": {"num_examples": 2, "pass_k": 2},
            "optim": {"learning_rate": 5e-2, "prompts_per_step": 2, "checkpoint_every": 100},
            "relabel": {"puct": {"num_simulations": 2}, "num_candidates": 2},
        },
    )
    run = RunDir.create(tmp_path / "run", config=cfg, seeds={"seed": 0})
    torch.manual_seed(0)
    init = load_policy(base, lora=cfg.model.lora)
    head_before = {k: v.clone() for k, v in init.value_head.state_dict().items()}
    adapted = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in init.model.named_parameters() if ".lora_A" in n
    }
    assert adapted == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }  # all-linear
    torch.manual_seed(0)
    train_arm(cfg, run, init_model=base)
    final = run.path / "final"
    saved = json.loads((final / "adapter_config.json").read_text())
    assert (
        saved["use_rslora"] is True
        and saved["bias"] == "lora_only"
        and saved["rank_pattern"] == {"down_proj": 2}
    )
    trained = load_policy(final)
    assert trained.is_peft
    lora_b = [p for n, p in trained.model.named_parameters() if "lora_B" in n]
    assert any(bool(p.abs().sum() > 0) for p in lora_b), "the adapter did not train"
    head_after = trained.value_head.state_dict()
    assert any(not torch.equal(head_after[k], head_before[k]) for k in head_before), (
        "the value head did not train"
    )


def test_the_default_settings_still_build_the_classic_adapter():
    config = lora_config(LoraSettings(enabled=True))
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"} and config.r == 8
