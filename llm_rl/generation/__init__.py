"""Generation backends: the metered sampler every hand-written arm draws from.

`base.py` holds the contract (`GenerationBackend`, `Continuation`) and the metering both backends share;
`hf.py` is the default (a hand-written decode loop with one shared prefill per prefix); `vllm.py` runs on a GPU
with vLLM's prefix cache (optional ``vllm`` extra). `make_backend` picks one from ``model.generation_backend``.
"""

from __future__ import annotations

from typing import Any

from llm_rl.generation.base import Continuation, GenerationBackend, Meter, check_sample_args
from llm_rl.generation.hf import HFBackend
from llm_rl.generation.vllm import VLLMBackend

__all__ = ["Continuation", "GenerationBackend", "HFBackend", "Meter", "check_sample_args", "make_backend"]


def make_backend(kind: str, policy: Any, budget: Meter | None = None) -> GenerationBackend:
    """The generation backend named by ``model.generation_backend``: ``"hf"`` (default) or ``"vllm"``."""
    if kind == "hf":
        return HFBackend(policy, budget)
    if kind == "vllm":
        return VLLMBackend(
            policy, budget
        )  # imports vllm itself; a clear error names the extra when it is missing
    raise ValueError(f"unknown generation backend {kind!r}; choose 'hf' or 'vllm'")
