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

* **Process supervision** under ``task.feedback: steps`` (every arm gets step checks): DeepSeekMath's GRPO with
  process supervision (Shao et al. 2024, "DeepSeekMath", §4.1.3). Each step of each completion (the verifier's
  ``split_steps``) gets the reward ``1`` if ``check_step`` accepts it and ``0`` if it rejects it (a check that
  cannot tell gives no reward); the rewards of all steps of a group's ``num_generations`` completions are
  normalised together, ``r~ = (r - mean(R)) / (std(R) + 1e-4)`` (per ``scale_rewards``, as TRL normalises
  outcome rewards: ``group``; ``batch`` takes the std over the whole batch's steps; ``none`` does not divide), and
  each token's advantage is the sum of the normalised rewards of its own step and every later step
  (`process_advantages`, `token_advantages`). TRL's ``GRPOTrainer`` computes one advantage per sequence, so
  `ProcessSupervisedGRPOTrainer` overrides exactly two methods: ``_generate`` (calls TRL's, and keeps the sampled
  completion ids of the batch) and ``_generate_and_score_completions`` (calls TRL's, then replaces its
  ``advantages`` ``[B]`` by the process advantages ``[B, T]`` on training batches). Everything else — sampling,
  the outcome rewards TRL still computes and logs, old log-probs, the clipped objective and its ``loss_type``
  aggregation (TRL's ``_compute_loss`` accepts ``[B, T]`` advantages), the update — is TRL's. Departures from
  DeepSeekMath: the process reward is the verifier's exact step check instead of a learned PRM; loss types whose
  objective is sequence-level (``luspo``, ``vespo``, ``importance_sampling_level: sequence``) are refused. Each
  step check is charged as one ``step_verifier_calls`` by the metered verifier. Under ``outcome`` (the default)
  the arm is TRL's ``GRPOTrainer`` unchanged and never calls ``check_step``.

The run itself — TRL's trainer reporting into the harness's budget, evaluation, checkpoints and logging, its
generation and rewards metered — is `llm_rl.harness.trl_bridge`.

Departures from a plain TRL run: ``max_steps`` is the budget's step limit when the axis is ``optimizer_steps`` and
otherwise a large bound, so the default LR schedule here is ``constant`` (a decaying schedule would decay over that
bound); bf16/fp16 follow ``model.dtype`` and gradient checkpointing is off unless the recipe asks (TRL's defaults
are bf16 and on); TRL's own progress bar and printer are replaced by the harness's.

The recipe section ``grpo:`` is `llm_rl.arm_configs.GrpoArmConfig` (importable from here too).
"""

from __future__ import annotations

import difflib
import functools
import tempfile
from collections.abc import Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch

from llm_rl.arm_configs import GrpoArmConfig
from llm_rl.arms.base import ArmContext, TrlArm
from llm_rl.arms.losses import pg_token_loss
from llm_rl.arms.mc_value import segment_token_ids, step_segments
from llm_rl.config import ExperimentConfig
from relabel_rl.config import ConfigError

__all__ = [
    "PROCESS_LOSS_TYPES",
    "RESERVED_TRL_KEYS",
    "SUPPORTED_PROBE_LOSS_TYPES",
    "GrpoArm",
    "GrpoArmConfig",
    "check_completion_steps",
    "grpo_config",
    "process_advantages",
    "process_supervised_trainer",
    "token_advantages",
]


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
# Loss types whose per-token objective takes per-token advantages as they are (process supervision needs that).
PROCESS_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


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
    if cfg.task.feedback == "steps":
        if args.loss_type not in PROCESS_LOSS_TYPES:
            raise ConfigError(
                f"'grpo.trl.loss_type: {args.loss_type}' has a sequence-level objective, and 'task.feedback: steps' "
                f"gives GRPO per-token process advantages; use one of {list(PROCESS_LOSS_TYPES)}"
            )
        if args.importance_sampling_level != "token":
            raise ConfigError(
                "'grpo.trl.importance_sampling_level' must be 'token' under 'task.feedback: steps' "
                "(process advantages are per token)"
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

    def trainer_class(self) -> type:
        """TRL's ``GRPOTrainer`` under ``task.feedback: outcome``; with process supervision under ``steps``."""
        if self.cfg.task.feedback == "steps":
            return process_supervised_trainer()
        from trl import GRPOTrainer  # lazy: TRL takes seconds to import

        return GRPOTrainer

    def gradient_sample(self, example: dict, ctx: ArmContext) -> torch.Tensor:
        return gradient_sample(self.cfg, example, ctx)


# ---------------------------------------------------------------------------------------------------------------
# Process supervision (task.feedback: steps; module docstring)


def check_completion_steps(completion: str, verifier: Any, example: dict) -> list[float | None]:
    """The process reward of every step of ``completion`` (``verifier.split_steps``): 1.0 when ``check_step``
    accepts it, 0.0 when it rejects it, None when it cannot tell. Every step is checked (against the steps the
    completion wrote before it), as a process reward model labels every step; one step check per step."""
    steps = verifier.split_steps(completion)
    rewards: list[float | None] = []
    for j, step in enumerate(steps):
        verdict = verifier.check_step(list(steps[:j]), step, example)
        rewards.append(None if verdict is None else float(verdict))
    return rewards


def process_advantages(
    step_rewards: Sequence[Sequence[float | None]], group_size: int, *, scale_rewards: str = "group"
) -> list[list[float]]:
    """DeepSeekMath's process-supervised GRPO advantages, per step: ``out[i][j] = sum_{j' >= j} r~[i][j']``.

    Args:
      step_rewards: per completion, per step, its reward (None: no reward for that step; it adds nothing to the
        sums and is left out of the statistics). Completions ``[g * group_size, (g + 1) * group_size)`` are the
        ``g``-th group (the completions of one prompt), as TRL orders them.
      group_size: ``num_generations``.
      scale_rewards: ``group`` — ``r~ = (r - mean) / (std + 1e-4)`` with the mean and (Bessel-corrected) std of
        the group's step rewards; ``batch`` — the group's mean, the std of every step reward in the batch;
        ``none`` — ``r - mean`` (TRL's options for outcome rewards). A group with fewer than two step rewards
        has std 0.

    Returns:
      ``[N][K_i]`` the advantage of each step (its tokens' advantage; see `token_advantages`).
    """
    if group_size < 1 or len(step_rewards) % group_size:
        raise ValueError(f"{len(step_rewards)} completions do not form groups of {group_size}")
    if scale_rewards not in TRL_SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {TRL_SCALE_REWARDS}, got {scale_rewards!r}")
    batch_std = _std([r for rewards in step_rewards for r in rewards if r is not None])
    out: list[list[float]] = []
    for start in range(0, len(step_rewards), group_size):
        group = step_rewards[start : start + group_size]
        given = [r for rewards in group for r in rewards if r is not None]
        mean = sum(given) / len(given) if given else 0.0
        std = {"group": _std(given), "batch": batch_std, "none": None}[scale_rewards]
        for rewards in group:
            normalised = [
                0.0 if r is None else (r - mean) / (std + 1e-4) if std is not None else r - mean
                for r in rewards
            ]
            suffix, total = [], 0.0
            for value in reversed(normalised):
                total += value
                suffix.append(total)
            out.append(suffix[::-1])
    return out


def _std(values: Sequence[float]) -> float:
    """Bessel-corrected standard deviation (TRL's ``nanstd``); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def token_advantages(
    token_ids: Sequence[int],
    completion: str,
    step_advantages: Sequence[float],
    verifier: Any,
    tokenizer: Any,
    *,
    eos_token_id: int,
) -> list[float]:
    """Each sampled token's process advantage: the advantage of the step it belongs to (`process_advantages`).

    The completion's text is cut into one segment per step (`llm_rl.arms.mc_value.step_segments`: a step, its
    delimiter, and any blank text before it) and the sampled ``token_ids`` are divided among the segments exactly
    (`llm_rl.arms.mc_value.segment_token_ids`; EOS goes with the last step). Tokens after the last step's
    delimiter (no step of their own) get 0; a completion whose steps cannot be located in its text (a verifier
    whose ``split_steps`` rewrites text) gets the first step's advantage — the sum over all its steps — on every
    token.
    """
    steps = verifier.split_steps(completion)
    if not step_advantages or not token_ids:
        return [0.0] * len(token_ids)
    segments = step_segments(completion, verifier, max_steps=len(steps) + 1)
    per_segment = segment_token_ids(token_ids, segments, tokenizer, eos_token_id=eos_token_id)
    if len(segments) < len(steps):  # steps not found in the text: one segment
        return [float(step_advantages[0])] * len(token_ids)
    out = []
    for k, ids in enumerate(per_segment):
        out += [float(step_advantages[k]) if k < len(step_advantages) else 0.0] * len(ids)
    return out


@functools.cache
def process_supervised_trainer() -> type:
    """`ProcessSupervisedGRPOTrainer`: TRL's ``GRPOTrainer`` with process advantages (module docstring). Built on
    first use (TRL is imported lazily); the harness's bridge subclasses it to meter generation and sets
    ``verifier`` (the metered verifier) on the instance before TRL's ``__init__`` runs."""
    from trl import GRPOTrainer

    class ProcessSupervisedGRPOTrainer(GRPOTrainer):
        """GRPO with DeepSeekMath's process supervision: per-token advantages from step checks (module
        docstring). Overrides ``_generate`` and ``_generate_and_score_completions``, nothing else."""

        verifier: Any  # the metered verifier (llm_rl.arms.ArmVerifier), set by the harness

        def _generate(self, prompts: list):
            out = super()._generate(prompts)
            self._sampled_completion_ids = [list(ids) for ids in out[1]]  # this process's rows, unpadded
            return out

        def _generate_and_score_completions(self, inputs: list) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            if self.model.training:
                output["advantages"] = self._process_advantages(inputs, output["completion_ids"])
            return output

        def _process_advantages(self, inputs: list, completion_ids: torch.Tensor) -> torch.Tensor:
            """``[B, T]`` per-token process advantages of this process's ``B`` rows (groups may span processes,
            so the step rewards are gathered, normalised per group, and this process's rows taken back)."""
            sampled = self._sampled_completion_ids
            texts = [self.processing_class.decode(ids, skip_special_tokens=True) for ids in sampled]
            rewards = [check_completion_steps(t, self.verifier, dict(x)) for t, x in zip(texts, inputs)]
            every = rewards
            if self.accelerator.num_processes > 1:  # in rank order, as TRL orders a batch's rows
                parts: list[Any] = [None] * self.accelerator.num_processes
                torch.distributed.all_gather_object(parts, rewards)
                every = [r for part in parts for r in part]
            per_step = process_advantages(every, self.num_generations, scale_rewards=self.scale_rewards)
            start = self.accelerator.process_index * len(rewards)
            advantages = torch.zeros(completion_ids.shape, dtype=torch.float32)
            eos = self.processing_class.eos_token_id
            for i, (ids, text) in enumerate(zip(sampled, texts)):
                row = token_advantages(ids, text, per_step[start + i], self.verifier, self.processing_class,
                                       eos_token_id=eos)  # fmt: skip
                advantages[i, : len(row)] = torch.tensor(row)
            checked = [r for rs in every for r in rs if r is not None]
            self._metrics["train"]["rejected_step_fraction"].append(
                sum(r == 0.0 for r in checked) / max(1, len(checked))
            )
            return advantages.to(completion_ids.device)

    return ProcessSupervisedGRPOTrainer


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
       ``scale_rewards == "none"`` ("batch" equals "group" for one prompt); under ``task.feedback: steps`` the
       per-token process advantages instead (`process_advantages`, `token_advantages`), as the trainer;
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
    logprobs, mask = _completion_token_logprobs(policy, prompt, samples, temperature=float(args.temperature))
    if cfg.task.feedback == "steps":  # process supervision: per-token advantages [G, T]
        step_rewards = [check_completion_steps(s.text, ctx.verifier, dict(example)) for s in samples]
        per_step = process_advantages(step_rewards, G, scale_rewards=args.scale_rewards)
        advantages = torch.zeros_like(logprobs.detach())
        for i, s in enumerate(samples):
            row = token_advantages(s.token_ids, s.text, per_step[i], ctx.verifier, policy.tokenizer,
                                   eos_token_id=policy.eos_token_id)  # fmt: skip
            advantages[i, : len(row)] = torch.tensor(row, dtype=advantages.dtype)
    else:
        rewards = torch.tensor(
            [ctx.verifier.score(s.text, dict(example)) for s in samples], dtype=torch.float32
        )
        advantages = rewards - rewards.mean()
        if args.scale_rewards != "none":
            advantages = advantages / (rewards.std() + 1e-4)
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
