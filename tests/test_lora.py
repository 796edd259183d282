"""PEFT LoRA end to end on the tiny preset: every arm trains with ``model.lora.enabled: true``.

For each arm (its real ``train``, a budget of a few hundred generated tokens): only the adapter and the value
head train — the base weights are bit-for-bit unchanged —, the adapter moved, and ``final/`` holds an adapter
(no full model weights) plus the value head, which `Policy.from_pretrained` / `load_policy` restore on top of
the recorded base model. The relabeller trains its value head beside the adapter; the head it saved is the
trained one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_rl.arms.grpo import GrpoArmConfig
from llm_rl.arms.mc_value import McValueArmConfig
from llm_rl.arms.relabel import RelabelArmConfig
from llm_rl.config import (
    BudgetConfig,
    EvalConfig,
    ExperimentConfig,
    LoraSettings,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    WarmStartConfig,
)
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model, load_policy
from relabel_rl.rundir import RunDir
from tree_search import PuctConfig
from verifiers.tasks.chain_arithmetic import ChainArithmetic


class DigitChain(ChainArithmetic):
    """Chain-arithmetic prompts scored by the share of digits in the completion: a dense reward an untrained
    tiny model already varies on, so every arm has a gradient from its first step (no warm start needed)."""

    name = "digit_chain"

    def score(self, completion: str, example: dict) -> float:
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))

    def check_step(self, previous_steps, step, example):
        return None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=2, num_heads=2)
    )


def _cfg(arm: str, out: Path) -> ExperimentConfig:
    return ExperimentConfig(
        output_dir=str(out),
        arm=arm,
        model=ModelConfig(lora=LoraSettings(enabled=True, r=4, alpha=8)),
        task=TaskConfig(
            verifier=f"{__name__}:DigitChain",
            train_size=16,
            test_size=4,
            difficulty={"min_steps": 1, "max_steps": 2},
            max_steps=3,
            max_step_tokens=8,
            max_completion_tokens=24,
        ),
        warm_start=WarmStartConfig(enabled=False),
        budget=BudgetConfig(axis="generated_tokens", limit=250, eval_every=250),
        eval=EvalConfig(num_examples=2, pass_k=2),
        optim=OptimConfig(learning_rate=5e-2, prompts_per_step=2, checkpoint_every=100),
        grpo=GrpoArmConfig(
            trl={
                "num_generations": 2,
                "per_device_train_batch_size": 2,
                "learning_rate": 5e-2,
                "beta": 0.0,
                "loss_type": "dapo",
            }
        ),
        # the value loss reaches the adapter: with the default detached head, a 2-simulation search whose target
        # equals the sampling frequency gives the advantage loss exactly zero gradient in so short a run
        relabel=RelabelArmConfig(
            puct=PuctConfig(num_simulations=2, dirichlet_fraction=0.25),
            num_candidates=2,
            detach_value_head=False,
        ),
        mc_value=McValueArmConfig(num_samples=2, num_rollouts=1),
    )


@pytest.mark.parametrize("arm", ["relabel", "mc_value", "grpo"])
def test_lora_arm_trains_adapter_and_value_head_only(arm, base_model, tmp_path):

    cfg = _cfg(arm, tmp_path)
    run = RunDir.create(tmp_path / "run", config=cfg, seeds={"seed": 0})
    torch.manual_seed(0)
    init = load_policy(base_model, lora=cfg.model.lora)
    init_head = {k: v.clone() for k, v in init.value_head.state_dict().items()}
    base_before = {n: p.detach().clone() for n, p in init.model.named_parameters() if "lora_" not in n}

    result = train_arm(cfg, run, init_model=base_model)
    assert "pass@1" in result

    final = run.path / "final"
    files = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"} <= files, files
    assert "model.safetensors" not in files, "a LoRA run must save the adapter, not the whole model"
    meta = json.loads((final / "value_head.json").read_text())
    assert meta["peft"] is True and Path(meta["base_model"]) == Path(base_model).resolve()

    trained = load_policy(final)
    assert trained.is_peft
    # The base weights under the adapter are the original ones, exactly.
    for n, p in trained.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n
    # The adapter moved: lora_B starts at zero, so any non-zero entry is learnt.
    lora_b = [p for n, p in trained.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b), "the adapter did not train"
    # The adapter changes the model's output; disabling it gives the base model's.
    ids = torch.tensor(trained.encode(["Start 3. Add 4.\n"]))
    with torch.no_grad():
        adapted = trained.model(ids).logits
        with trained.model.disable_adapter():
            plain = trained.model(ids).logits
    assert not torch.allclose(adapted, plain)
    # The value head is saved with the adapter; the relabeller trains it.
    saved_head = load_file(str(final / "value_head.safetensors"))
    for k, v in trained.value_head.state_dict().items():
        assert torch.equal(v, saved_head[k])
    if arm == "relabel":
        assert any(not torch.equal(saved_head[k], init_head[k]) for k in init_head), (
            "value head did not train"
        )
