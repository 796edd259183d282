"""The policy (a causal LM + value head, `policy.py`) and how it is built and loaded (`load.py`)."""

from __future__ import annotations

from llm_rl.model.load import build_char_tokenizer, build_tiny_model, load_policy, resolve_model_path
from llm_rl.model.policy import Policy, TokenLogprobs, ValueHead, lora_config

__all__ = [
    "Policy",
    "TokenLogprobs",
    "ValueHead",
    "build_char_tokenizer",
    "build_tiny_model",
    "load_policy",
    "lora_config",
    "resolve_model_path",
]
