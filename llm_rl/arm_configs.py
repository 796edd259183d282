"""Every arm's recipe section (``grpo:``, ``relabel:``, ``mc_value:``, ``tree_grpo:``, ``rft:``), in a module
that imports no arm.

Why here and not at the top of each arm's file: the recipe (`llm_rl.config.ExperimentConfig`) holds every arm's
section and every arm reads the recipe, so a section defined beside its algorithm makes the recipe import the arms
and the arms import the recipe. Here the dependencies point one way: ``llm_rl.arms.<arm>`` -> `llm_rl.config` ->
this module. Each arm's module re-exports its section (``from llm_rl.arms.relabel import RelabelArmConfig`` works)
and its docstring says what the knobs mean; checks that need the whole recipe stay with their arm
(`llm_rl.arms.relabel.prune_rejected_steps`, `llm_rl.arms.tree_grpo.check_config`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal

from relabel_rl.config import knob
from tree_search import GumbelConfig, PuctConfig, SearchConfig

__all__ = ["GrpoArmConfig", "McValueArmConfig", "RelabelArmConfig", "RftArmConfig", "TreeGrpoArmConfig"]


# --- grpo: GRPO (llm_rl/arms/grpo.py) ---------------------------------------------------------------------------
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


# --- relabel: the tree-search relabeller (llm_rl/arms/relabel.py) -----------------------------------------------
@dataclass(frozen=True)
class RelabelArmConfig:
    """The ``relabel:`` recipe section."""

    root: Literal["puct", "gumbel"] = knob(
        "puct", help="which search (and which sub-section below) the relabeller runs"
    )
    # PUCT: 8 simulations, the committed step sampled from the visit counts at temperature 1 (AlphaZero's
    # self-play settings) but NO Dirichlet root noise (AlphaZero puts it on a quarter of the prior): over the ~2
    # distinct candidates of K=4 samples Dir(0.3) is nearly one-hot and raises the rarer (more often wrong) step;
    # without it the target's mass on correct steps rose from 0.56-0.58 to 0.60-0.62 (docs/research/
    # outcome_relabel.md). The K samples already explore. Set `relabel.puct.dirichlet_fraction: 0.25` for AlphaZero's.
    puct: PuctConfig = field(default_factory=lambda: PuctConfig(num_simulations=8, dirichlet_fraction=0.0))
    gumbel: GumbelConfig = field(
        default_factory=lambda: GumbelConfig(num_simulations=8, max_num_considered_actions=4)
    )
    num_candidates: int = knob(4, ge=1, help="K: candidate steps sampled per expansion")
    candidate_temperature: float = knob(1.0, gt=0.0, help="sampling temperature of the candidate steps")
    value_target: Literal["outcome", "search", "mix"] = knob(
        "outcome", help="the value head's target: the outcome z, the search's root value, or their mean"
    )
    value_loss_coef: float = knob(0.5, ge=0.0, help="weight of the value loss beside the policy loss")
    # prune candidates check_step rejects: follows `task.feedback` (on under `steps`, off under `outcome`);
    # null = follow it, an explicit value must agree with it (see `llm_rl.arms.relabel.prune_rejected_steps`)
    prune_rejected_steps: bool | None = knob(
        None,
        help="prune candidates check_step rejects; null: follow task.feedback (an explicit value must agree)",
    )
    # "advantage" (default): -sum (target - beta_hat) * log pi(step), Sampled MuZero's loss minus its zero-mean
    # self-imitation term: the same expected gradient, exactly none where the search adds nothing. "sampled":
    # Sampled MuZero's -sum target * log pi(step) (unbiased, but each batch imitates the policy's own samples);
    # "candidate": pi renormalised over the candidate set (drifts towards flatter policies). Why advantage: under
    # Adam a zero-mean gradient still moves every weight ~learning rate per step; the self-imitation noise alone
    # took the tiny preset at L=5 from 0.20 to 0.04 pass@1 (docs/research/outcome_relabel.md, section 1).
    policy_loss: Literal["advantage", "sampled", "candidate"] = knob(
        "advantage",
        help="advantage (Sampled MuZero minus its self-imitation term: -sum (target - beta_hat) log pi), sampled "
        "(Sampled MuZero, -sum target log pi) or candidate (pi renormalised over the candidates)",
    )
    # The value head reads the LM's last hidden state. Detached (default), the value loss trains the head alone
    # and sends no gradient into the LM; AlphaZero's shared trunk does get it. Why: the value loss alone (policy
    # loss off) took the tiny preset from 0.20 to 0.02 pass@1 in ~10 Adam steps through the trunk, and the tiny
    # LM's features do not encode correctness anyway (a probe's AUC 0.5-0.6; docs/research/outcome_relabel.md).
    detach_value_head: bool = knob(
        True,
        help="the value loss trains the value head only (no gradient into the LM); false: AlphaZero's trunk",
    )
    # AlphaGo's lambda mixing: every expanded leaf is also rolled out once to a terminal by the policy and scored;
    # its value is (1 - lambda) v_head + lambda z. null follows task.feedback: 0.5 under outcome (AlphaGo's
    # lambda; the only way terminal scores reach the tree while the value head knows nothing), 0 under steps
    # (pruning grounds the search there; rollouts were not measured under steps). A number overrides either.
    leaf_rollout_weight: float | None = knob(
        None,
        ge=0.0,
        le=1.0,
        help="lambda of the leaf value (1 - lambda) v_head + lambda z_rollout (one scored policy rollout per "
        "expanded leaf); null: 0.5 under task.feedback outcome, 0 under steps",
    )

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"relabel.num_candidates must be > 0, got {self.num_candidates}")

    @property
    def search(self) -> SearchConfig:
        """The search the relabeller runs: ``puct`` or ``gumbel``, per ``root``."""
        return self.puct if self.root == "puct" else self.gumbel


# --- mc_value: Monte-Carlo step values (llm_rl/arms/mc_value.py) ------------------------------------------------
@dataclass(frozen=True)
class McValueArmConfig:
    """The ``mc_value:`` recipe section (updates per batch: ``optim.epochs`` x ``optim.minibatches``)."""

    num_samples: int = knob(4, ge=1, help="completions sampled per prompt")
    num_rollouts: int = knob(4, ge=1, help="fresh rollouts per step boundary to estimate its value")
    temperature: float = knob(1.0, gt=0.0, help="sampling temperature of the samples and rollouts")
    clip_epsilon: float = knob(0.2, gt=0.0, help="PPO clip range (acts from the second update of a batch)")

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_rollouts"):
            if getattr(self, name) <= 0:
                raise ValueError(f"mc_value.{name} must be > 0, got {getattr(self, name)}")


# --- tree_grpo: tree-structured GRPO (llm_rl/arms/tree_grpo.py) -------------------------------------------------
@dataclass(frozen=True)
class TreeGrpoArmConfig:
    """The ``tree_grpo:`` recipe section. Leaves per prompt: ``root_branching x branching_factor ** (depth - 1)``
    (fewer when paths end early)."""

    branching_factor: int = knob(
        2, ge=1, help="children of every open node at the branching levels below the prompt"
    )
    root_branching: int | None = knob(
        None, ge=1, help="children of the prompt (TreeRL's M); null: branching_factor"
    )
    depth: int = knob(
        2,
        ge=1,
        help="branching levels, the prompt's included; the last samples the rest of each completion in one piece "
        "(1: a GRPO group)",
    )
    branch_every: int = knob(1, ge=1, help="reasoning steps in a node between two branching levels")
    temperature: float = knob(
        1.0, gt=0, help="sampling temperature (the loss divides the logits by it too, as TRL)"
    )
    clip_epsilon: float = knob(
        0.2, ge=0, help="PPO clip range (matters only when a batch is trained on twice)"
    )

    @property
    def root_width(self) -> int:
        return self.branching_factor if self.root_branching is None else self.root_branching

    @property
    def leaves_per_prompt(self) -> int:
        """The most leaves one prompt's tree can have (every path reaches the last level)."""
        return self.root_width * self.branching_factor ** (self.depth - 1)


# --- rft: rejection-sampling fine-tuning (llm_rl/arms/rft.py) ---------------------------------------------------
@dataclass(frozen=True)
class RftArmConfig:
    """The ``rft:`` recipe section."""

    num_samples: int = knob(4, ge=1, help="completions sampled per prompt (N)")
    threshold: float = knob(
        1.0, ge=0.0, le=1.0, help="keep a completion whose verifier score (in [0, 1]) is >= this"
    )
    dedupe: bool = knob(True, help="keep only the first of identical completion texts of a prompt")
    max_kept_per_prompt: int | None = knob(None, ge=1, help="keep at most this many per prompt (null: all)")
    temperature: float = knob(1.0, gt=0, help="sampling temperature (the loss is on the policy itself)")
