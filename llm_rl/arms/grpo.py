"""GRPO, run by TRL's `GRPOTrainer`: the baseline that gets ONE scalar per completion.

Why TRL: GRPO is exactly what TRL's trainer implements and maintains (group sampling, group-normalised
advantages, the loss variants of GRPO / DAPO / Dr. GRPO / BNPO, KL to a reference, several updates per generation
with ``num_iterations`` / ``steps_per_generation``). This file is the arm's two parts:

* **The recipe translation.** The ``grpo.trl`` mapping is passed to `trl.GRPOConfig`, so TRL validates it (an
  unknown key or an inconsistent batch fails before any model is loaded, with TRL's words and the dotted recipe
  key). Fields the harness must control (output dir, seed, completion length, trackers, checkpoint and logging
  cadence, stopping, evaluation) are set here from the recipe; a recipe that sets one gets a `ConfigError` saying
  where the value comes from instead (:data:`RESERVED_TRL_KEYS`).
* **The per-prompt objective** for the gradient-variance probe (`GrpoArm.gradient_sample`): TRL's trainer has no
  hook for one prompt's gradient, so the GRPO loss of ``GRPOTrainer._compute_loss`` (TRL 1.16) is written out for
  one group of ``num_generations`` samples, on-policy; `tests/test_grpo.py` checks it against the formula by hand
  and against TRL's own ``_compute_loss``. Settings whose loss it does not mirror are refused, not approximated.

The run itself — TRL's trainer reporting into the harness's budget, evaluation, checkpoints and logging, its
generation and rewards metered — is `llm_rl.harness.trl_bridge`.

Departures from a plain TRL run: ``max_steps`` is the budget's step limit when the axis is ``optimizer_steps`` and
otherwise a large bound, so the default LR schedule here is ``constant`` (a decaying schedule would decay over that
bound); bf16/fp16 follow ``model.dtype`` and gradient checkpointing is off unless the recipe asks (TRL's defaults
are bf16 and on); TRL's own progress bar and printer are replaced by the harness's.
"""

from __future__ import annotations

import difflib
import importlib.util
import tempfile
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llm_rl.arms.base import ArmContext, TrlArm
from llm_rl.arms.losses import pg_token_loss
from relabel_rl.config import ConfigError, knob

if TYPE_CHECKING:  # annotation only (llm_rl.config imports this module for GrpoArmConfig)
    from llm_rl.config import ExperimentConfig

__all__ = ["RESERVED_TRL_KEYS", "SUPPORTED_PROBE_LOSS_TYPES", "GrpoArm", "GrpoArmConfig", "grpo_config"]


@dataclass(frozen=True)
class GrpoArmConfig:
    """The ``grpo:`` recipe section. ``trl`` holds `trl.GRPOConfig` fields (num_generations, loss_type, beta,
    scale_rewards, temperature, learning_rate, per_device_train_batch_size, num_iterations, ...)."""

    trl: dict[str, Any] = knob(
        {
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "beta": 0.0,
            "loss_type": "dapo",
            "scale_rewards": "group",
            "temperature": 1.0,
        },
        help="trl.GRPOConfig fields (validated by TRL); the harness sets output dir, seed, lengths, cadence",
    )

    def __post_init__(self) -> None:
        if self.trl.get("use_vllm") and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "'grpo.trl.use_vllm' is true but vLLM is not installed (pip install 'relabel-rl[vllm]')"
            )


# ---------------------------------------------------------------------------------------------------------------
# The recipe translation

# GRPOConfig fields the arm sets itself, and where each value comes from.
RESERVED_TRL_KEYS: dict[str, str] = {
    "output_dir": "the run directory's checkpoints/ folder",
    "seed": "the recipe's top-level `seed`",
    "data_seed": "the recipe's top-level `seed`",
    "max_completion_length": "`task.max_completion_tokens`",
    "report_to": "the harness logs every record (`logging.report_to` for trackers)",
    "use_cpu": "the hardware (CPU when no CUDA device is visible)",
    "save_steps": "`optim.checkpoint_every`",
    "save_strategy": "`optim.checkpoint_every` (steps)",
    "save_only_model": "resume needs the optimizer state, so full checkpoints are always saved",
    "logging_steps": "every optimizer step is logged",
    "logging_strategy": "every optimizer step is logged",
    "max_steps": "the harness stops training when the recipe's `budget:` is spent",
    "num_train_epochs": "the budget decides when training stops",
    "eval_strategy": "the harness evaluates on its schedule (`budget:` `eval_every`)",
    "do_eval": "the harness evaluates on its schedule (`budget:` `eval_every`)",
    "resume_from_checkpoint": "the arm resumes from the run directory's last checkpoint",
    "push_to_hub": "runs never upload anything",
}
# Defaults the arm supplies; the recipe may override them.
_ARM_DEFAULTS: dict[str, Any] = {
    "lr_scheduler_type": "constant",
    "activation_checkpointing": False,  # TRL's default is on (as `gradient_checkpointing`); off unless asked
    "disable_tqdm": True,
    "save_total_limit": 2,
    "dataloader_num_workers": 0,
}
# TRL 1.16 checks these two only mid-training (in the loss / advantage code); the arm checks them up front.
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
TRL_SCALE_REWARDS = ("group", "batch", "none")


# ---------------------------------------------------------------------------------------------------------------
# Config


def grpo_config(cfg: ExperimentConfig, output_dir: str | Path, *, max_steps: int = 10_000_000) -> Any:
    """The `trl.GRPOConfig` of a recipe: ``grpo.trl`` + the arm-controlled fields, validated by TRL.

    Raises:
      ConfigError: a reserved key in ``grpo.trl`` (naming where its value comes from), an unknown key (with the
        nearest valid one), or TRL's own validation error, each naming ``grpo.trl``.
    """
    from trl import GRPOConfig  # lazy: TRL takes seconds to import and only this arm needs it

    knobs = dict(cfg.grpo.trl)
    for key in knobs:
        if key in RESERVED_TRL_KEYS:
            raise ConfigError(
                f"'grpo.trl.{key}' is set by the GRPO arm, not the recipe: it comes from {RESERVED_TRL_KEYS[key]}"
            )
    valid = {f.name for f in dataclass_fields(GRPOConfig) if f.init}
    for key in knobs:
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean 'grpo.trl.{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown TRL GRPOConfig key 'grpo.trl.{key}'{hint}")
    use_cpu = not torch.cuda.is_available()
    defaults = dict(_ARM_DEFAULTS)
    defaults["bf16"] = cfg.model.dtype == "bfloat16"
    defaults["fp16"] = cfg.model.dtype == "float16"
    if "gradient_checkpointing" in knobs or "activation_checkpointing" in knobs:
        del defaults["activation_checkpointing"]
    controlled = {
        "output_dir": str(output_dir),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "max_completion_length": cfg.task.max_completion_tokens,
        "report_to": [],
        "use_cpu": use_cpu,
        "save_strategy": "steps",
        "save_steps": cfg.optim.checkpoint_every,
        "save_only_model": False,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "max_steps": max_steps,
        "eval_strategy": "no",
        "push_to_hub": False,
    }
    try:
        args = GRPOConfig(**{**defaults, **knobs, **controlled})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"grpo.trl: TRL rejected the GRPO settings: {e}") from None
    if args.loss_type not in TRL_LOSS_TYPES:
        raise ConfigError(
            f"'grpo.trl.loss_type' must be one of {list(TRL_LOSS_TYPES)}, got {args.loss_type!r}"
        )
    if args.scale_rewards not in TRL_SCALE_REWARDS:
        raise ConfigError(
            f"'grpo.trl.scale_rewards' must be one of {list(TRL_SCALE_REWARDS)} (or true/false), "
            f"got {args.scale_rewards!r}"
        )
    return args


# ---------------------------------------------------------------------------------------------------------------
# The arm


class GrpoArm(TrlArm):
    """GRPO through TRL's `GRPOTrainer` (module docstring)."""

    name = "grpo"

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        if cfg.model.generation_backend == "vllm" and not cfg.grpo.trl.get("use_vllm"):
            raise ConfigError(  # TRL generates for this arm: the harness's backend never reaches it
                "'model.generation_backend: vllm' does not reach the GRPO arm (TRL samples for it): set "
                "'grpo.trl.use_vllm: true' (with grpo.trl.vllm_mode) too, or use generation_backend hf"
            )
        with tempfile.TemporaryDirectory() as tmp:  # TRL validates the settings; nothing is written there
            try:
                grpo_config(cfg, tmp)
            except ConfigError:
                raise
            except (ValueError, TypeError) as e:
                raise ConfigError(f"'grpo.trl': {e}") from None

    def trainer_args(self, output_dir: str, *, max_steps: int) -> Any:
        return grpo_config(self.cfg, output_dir, max_steps=max_steps)

    def gradient_sample(self, example: dict, ctx: ArmContext) -> torch.Tensor:
        return gradient_sample(self.cfg, example, ctx)


# ---------------------------------------------------------------------------------------------------------------
# The per-prompt objective

SUPPORTED_PROBE_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def gradient_sample(cfg: ExperimentConfig, example: dict, ctx: ArmContext) -> torch.Tensor:
    """One stochastic estimate of GRPO's loss for ONE prompt; ``loss.backward()`` gives a per-prompt gradient.

    Mirrors ``trl.GRPOTrainer._compute_loss`` on-policy (``num_iterations=1``; old log-probs are the current ones
    detached, so the importance ratio is 1 and clipping is inactive), for the recipe's GRPOConfig:

    1. sample ``num_generations`` completions of ``example["prompt"]`` (``ctx.sampler``, ``temperature``, up to
       ``max_completion_length`` tokens, EOS ends one);
    2. rewards from ``ctx.verifier`` (contained: a failure scores 0);
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

    G = int(args.num_generations)
    prompt, policy = example["prompt"], ctx.policy
    with torch.no_grad():
        (samples,) = ctx.sampler.sample(
            [prompt],
            n=G,
            max_new_tokens=int(args.max_completion_length),
            temperature=float(args.temperature),
            stop=None,
            generator=ctx.generator,
        )
    rewards = torch.tensor([ctx.verifier.score(s.text, dict(example)) for s in samples], dtype=torch.float32)
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
