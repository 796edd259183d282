"""GRPO's objective for ONE prompt, written out: the per-prompt gradient estimate of the GRPO arm.

Why by hand: the variance probe needs one gradient estimate per prompt, and TRL's `GRPOTrainer` only exposes a
whole-batch training step. This module re-implements the loss of ``trl.GRPOTrainer._compute_loss`` (TRL 1.16) for
one group of ``num_generations`` samples of one prompt, on-policy (``num_iterations=1``), for the recipe's
``grpo.trl`` settings; `tests/test_grpo.py` checks its gradient against the formula by hand. Settings whose loss it
does not mirror (a KL term, other loss types, sequence-level ratios, entropy terms) are refused, not approximated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llm_rl.config import ExperimentConfig

__all__ = ["SUPPORTED_PROBE_LOSS_TYPES", "gradient_sample"]

SUPPORTED_PROBE_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def gradient_sample(
    cfg: ExperimentConfig, policy: Any, verifier: Any, example: dict, *, generator: torch.Generator | None
) -> torch.Tensor:
    """One stochastic estimate of GRPO's loss for ONE prompt; ``loss.backward()`` gives a per-prompt gradient.

    Mirrors ``trl.GRPOTrainer._compute_loss`` on-policy (``num_iterations=1``; old log-probs are the current ones
    detached, so the importance ratio is 1 and clipping is inactive), for the recipe's GRPOConfig:

    1. sample ``num_generations`` completions of ``example["prompt"]`` (`generation.HFBackend`, ``temperature``,
       up to ``max_completion_length`` tokens, EOS ends one; not counted in any budget);
    2. rewards from the verifier (contained: a failure scores 0);
    3. advantages ``r - mean(r)``, divided by ``std(r) + 1e-4`` (Bessel-corrected, as TRL) unless
       ``scale_rewards == "none"`` ("batch" equals "group" for one prompt);
    4. per-token loss ``-A * exp(logp - logp.detach())`` (``logp`` from logits / ``temperature``, as TRL) over
       each completion's tokens (EOS included, as TRL), aggregated per ``loss_type``: ``grpo`` mean over each sequence then over sequences; ``bnpo``/``dapo``
       sum over all tokens / token count (for one prompt DAPO's global normaliser is the group's token count);
       ``dr_grpo`` sum / (num_generations * max_completion_length).
       ``mask_truncated_completions`` drops completions that did not end with EOS, as TRL.

    Raises:
      ValueError: for settings whose loss this does not mirror (``beta != 0``: the KL term needs a reference model;
        loss types other than :data:`SUPPORTED_PROBE_LOSS_TYPES`; sequence-level importance sampling; entropy
        masking or bonus).
    """
    import verifiers
    from llm_rl.arms.grpo import grpo_config
    from llm_rl.generation import HFBackend
    from llm_rl.losses import pg_token_loss

    args = grpo_config(cfg, Path("/tmp/llm_rl_grpo_probe"))  # validated by TRL; nothing is written there
    if args.beta != 0.0:
        raise ValueError(f"gradient_sample mirrors GRPO only with beta=0 (got grpo.trl.beta={args.beta})")
    if args.loss_type not in SUPPORTED_PROBE_LOSS_TYPES:
        raise ValueError(
            f"gradient_sample supports loss_type in {SUPPORTED_PROBE_LOSS_TYPES}, got {args.loss_type!r}"
        )
    if args.importance_sampling_level != "token":
        raise ValueError("gradient_sample mirrors token-level importance sampling only")
    if args.top_entropy_quantile < 1.0 or getattr(args, "entropy_coef", 0.0) != 0.0:
        raise ValueError("gradient_sample does not mirror entropy masking / entropy bonus")

    contained = (
        verifier
        if isinstance(verifier, verifiers.ContainedVerifier)
        else verifiers.ContainedVerifier(verifier)
    )
    G = int(args.num_generations)
    prompt = example["prompt"]
    backend = HFBackend(policy, budget=None)
    with torch.no_grad():
        (samples,) = backend.sample(
            [prompt],
            n=G,
            max_new_tokens=int(args.max_completion_length),
            temperature=float(args.temperature),
            stop=None,
            generator=generator,
        )
    rewards = torch.tensor([contained.score(s.text, dict(example)) for s in samples], dtype=torch.float32)
    advantages = rewards - rewards.mean()
    if args.scale_rewards != "none":
        advantages = advantages / (rewards.std() + 1e-4)

    logprobs, mask = _completion_token_logprobs(policy, prompt, samples, temperature=float(args.temperature))
    if args.mask_truncated_completions:
        finished = torch.tensor([bool(s.finished) for s in samples], dtype=mask.dtype)
        mask = mask * finished[:, None]
    if float(mask.sum()) == 0:
        return (logprobs * 0.0).sum()  # nothing to learn from (all masked): a zero loss with a graph
    if args.loss_type == "grpo":
        return pg_token_loss(
            logprobs, logprobs.detach(), advantages, mask, clip_epsilon=None, reduction="sequence_mean"
        )
    if args.loss_type in ("bnpo", "dapo"):
        return pg_token_loss(
            logprobs, logprobs.detach(), advantages, mask, clip_epsilon=None, reduction="token_mean"
        )
    # dr_grpo: token sum over a constant normaliser
    token_mean = pg_token_loss(
        logprobs, logprobs.detach(), advantages, mask, clip_epsilon=None, reduction="token_mean"
    )
    return token_mean * mask.sum() / (G * int(args.max_completion_length))


def _completion_token_logprobs(
    policy: Any, prompt: str, samples: list, *, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs ``[G, T]`` (with grad) and mask of each sampled completion's own token ids (EOS
    included when it was sampled, as in TRL's ``completion_ids``), from logits divided by the sampling
    temperature, as TRL's fused LM head computes them."""
    scored = policy.token_logprobs(
        [prompt] * len(samples), [list(s.token_ids) for s in samples], temperature=temperature
    )
    return scored.logprobs, scored.mask
