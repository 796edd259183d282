"""The three arms. Each module exposes ``train(cfg, run, *, init_model) -> dict`` and
``gradient_sample(cfg, policy, verifier, example, *, generator) -> torch.Tensor`` (see each module's docstring)."""

from __future__ import annotations

import importlib
from types import ModuleType

ARM_MODULES = {
    "grpo": "llm_rl.arms.grpo",
    "relabel": "llm_rl.arms.relabel",
    "mc_value": "llm_rl.arms.mc_value",
}


def get_arm(name: str) -> ModuleType:
    """The module implementing arm ``name`` (imported lazily: GRPO pulls in TRL, the others do not)."""
    if name not in ARM_MODULES:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARM_MODULES)}")
    return importlib.import_module(ARM_MODULES[name])
