"""The LLM-side recipe: one typed config for every `llm-rl` command, loaded with `relabel_rl.load_config`.

One recipe describes one experiment: the model, the task, the warm start that seeds every arm, the budget and how
it is measured, evaluation, the optimiser and logging the harness applies to every arm, and each arm's knobs.
`llm-rl train` runs ``arm`` once with ``seed``; `llm-rl compare` runs every arm in ``compare.arms`` for every seed in
``compare.seeds`` from the same warm-started checkpoint.

The sections shared by every arm live here; each arm's own section is the config dataclass at the top of its file
(``grpo:`` `llm_rl.arms.grpo.GrpoArmConfig`, ``relabel:`` `llm_rl.arms.relabel.RelabelArmConfig`, ``mc_value:``
`llm_rl.arms.mc_value.McValueArmConfig`). GRPO's knobs are TRL's own: the ``grpo.trl`` mapping is passed to
`trl.GRPOConfig`, which validates it (so an unknown TRL knob fails early, in TRL's words).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llm_rl.arms.grpo import GrpoArmConfig
from llm_rl.arms.mc_value import McValueArmConfig
from llm_rl.arms.relabel import RelabelArmConfig
from llm_rl.harness.budget import BudgetAxis

TrackerName = Literal["tensorboard", "wandb", "trackio"]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class LoraSettings:
    """PEFT LoRA on the policy (the value head trains beside the adapter and is saved with it)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass(frozen=True)
class ModelConfig:
    """The policy. ``name_or_path: tiny`` builds the built-in tiny preset into the run directory, saves it, and
    loads it back through `from_pretrained` — the same path as a local directory or a hub id."""

    name_or_path: str = "tiny"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tiny_hidden_size: int = 64
    tiny_num_layers: int = 2
    tiny_num_heads: int = 4
    tiny_max_positions: int = 256
    value_head_hidden: int = 0  # 0: a linear value head; >0: a one-hidden-layer MLP of this width
    lora: LoraSettings = field(default_factory=LoraSettings)
    generation_backend: Literal["hf", "vllm"] = "hf"


@dataclass(frozen=True)
class TaskConfig:
    """The task: a verifier (built-in name, plugin name, or ``module:attr``) and its generated dataset."""

    verifier: str = "chain_arithmetic"
    train_size: int = 512
    # held-out rows generated (the report evaluates the first `eval.num_examples`): >= 500 by default, so that a
    # pass rate's binomial error (<= 0.022) is well below the training noise a comparison measures
    test_size: int = 500
    difficulty: dict[str, Any] = field(default_factory=dict)  # passed to Verifier.generate
    # what every arm may learn from: `outcome` (the verifier's score of a finished completion only) or `steps`
    # (each arm may also use check_step, the way natural to it); the report labels every number with it
    feedback: Literal["outcome", "steps"] = "outcome"
    max_steps: int = 8  # reasoning steps in one completion, at most
    max_step_tokens: int = 24  # new tokens per step, at most (step-wise arms)
    max_completion_tokens: int = 160  # whole completion, at most (GRPO, evaluation)
    verifier_timeout: float | None = None  # seconds; None: score in-process (trusted built-ins)

    def __post_init__(self) -> None:
        for n in ("train_size", "test_size", "max_steps", "max_step_tokens", "max_completion_tokens"):
            _positive(f"task.{n}", getattr(self, n))


@dataclass(frozen=True)
class WarmStartConfig:
    """SFT (TRL `SFTTrainer`) on generated gold solutions until a held-out pass rate or a step count."""

    enabled: bool = True
    target_pass_rate: float | None = (
        0.25  # stop once greedy pass@1 on held-out reaches this; None: run max_steps
    )
    max_steps: int = 400
    eval_every: int = 50
    learning_rate: float = 3e-3
    batch_size: int = 32  # the global batch: shared by the processes under accelerate launch
    eval_examples: int = 64
    # the warm start's own task difficulty (e.g. {min_steps: 1, max_steps: 6}: one warm start on a mixture that
    # covers every length of a sweep); null: `task.difficulty` (with `compare.sweep` over lengths: the sweep's range)
    difficulty: dict[str, Any] | None = None


@dataclass(frozen=True)
class BudgetConfig:
    """Every arm stops when the counter on ``axis`` reaches ``limit``; evaluation every ``eval_every`` units.
    Axes: ``generated_tokens``, ``prefill_tokens``, ``total_tokens``, ``verifier_calls`` (``outcome_`` + ``step_``),
    ``outcome_verifier_calls``, ``step_verifier_calls``, ``prompts``, ``optimizer_steps``, ``wall_time``
    (`llm_rl.harness.budget`)."""

    axis: BudgetAxis = "generated_tokens"
    limit: float = 40_000
    eval_every: float = 10_000

    def __post_init__(self) -> None:
        _positive("budget.limit", self.limit)
        _positive("budget.eval_every", self.eval_every)


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (never trained on): greedy pass@1 (batched) and sampled pass@k, with every row's result
    kept in the eval record, so the report pairs arms item by item. ``num_examples`` <= ``task.test_size``."""

    num_examples: int = 500
    pass_k: int = 4  # samples per row for pass@k; 0: greedy pass@1 only
    temperature: float = 1.0


@dataclass(frozen=True)
class OptimConfig:
    """The harness's optimiser and update schedule for the hand-written arms (relabel, mc_value, your own); GRPO
    takes its own from ``grpo.trl`` (``learning_rate``, and ``num_iterations`` / ``steps_per_generation`` for
    several updates per generation)."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    prompts_per_step: int = 8  # prompts collected per batch (the global batch under `accelerate launch`)
    # Optimiser updates per collected batch: `epochs` passes over it, each in `minibatches` parts (PPO's epochs x
    # minibatches; TRL's num_iterations x steps_per_generation). 1 x 1 is one update per batch, on-policy.
    epochs: int = 1
    minibatches: int = 1
    checkpoint_every: int = (
        10  # optimizer steps (a checkpoint is written at the end of the batch that crosses it)
    )
    # The global batch is collected in this many equal chunks, each seeded by (seed, step, chunk) and shared by
    # the processes of an `accelerate launch` run; None: one per process. Runs with the same value give the same
    # results whatever the number of processes (see llm_rl/harness/distributed.py).
    prompt_chunks: int | None = None

    def __post_init__(self) -> None:
        for n in ("prompts_per_step", "epochs", "minibatches", "checkpoint_every"):
            _positive(f"optim.{n}", getattr(self, n))


@dataclass(frozen=True)
class LoggingConfig:
    """Where records go besides the run's ``metrics.jsonl``: experiment trackers through accelerate's tracker API
    (``tensorboard`` writes under ``RUN_DIR/trackers``; ``wandb`` and ``trackio`` need their package and login).
    ``--logging.report_to tensorboard`` or a list; none by default."""

    report_to: list[TrackerName] | TrackerName = field(default_factory=list)
    project: str = "relabel-rl"  # the trackers' project name; each run is named after its directory

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):  # one tracker given as a bare name
            object.__setattr__(self, "report_to", [self.report_to])


@dataclass(frozen=True)
class VariantConfig:
    """A named variant of an arm for `compare`: the arm with recipe overrides that apply to this variant's runs
    only (an ablation, or the arm under the other feedback setting). ``overrides`` are dotted keys or nested
    sections, e.g. ``{relabel.prune_rejected_steps: false}`` or ``{task: {feedback: steps}}``; they may touch the
    arm sections, ``optim`` and ``task.feedback`` — not what every run of a comparison must share (model, warm
    start, budget, evaluation, the task's rows)."""

    arm: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    """A difficulty axis of `compare`: every arm and variant runs, for every seed, at each value. ``knob: length``
    sets the task's number of operations (``min_steps = max_steps = value``); any other name is a difficulty knob
    of ``task.verifier`` set to the value. One warm start serves every value (``warm_start.difficulty``)."""

    knob: str = "length"
    values: list[int | float] = field(default_factory=list)  # []: no sweep


@dataclass(frozen=True)
class CompareConfig:
    """`llm-rl compare`: arms and variants x seeds (x sweep values, or x warm-start pass rates) at equal budget."""

    # registered arm names (llm_rl/arms/__init__.py) or `module:Class` paths of your own `Arm` subclasses
    arms: list[str] = field(default_factory=lambda: ["grpo", "relabel", "mc_value"])
    # named variants, run like arms in their own run directories: {name: {arm: relabel, overrides: {...}}}
    variants: dict[str, VariantConfig] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # the arm every paired difference is taken against, under the same task.feedback setting
    baseline: str = "grpo"
    # extra contrasts for the report's family, each [a, b] (arm or variant names): "a - b", paired
    contrasts: list[list[str]] = field(default_factory=list)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    pass_threshold: float = 0.5  # report the budget each arm needed to reach this held-out pass@1 ...
    threshold_gain: float | None = None  # ... or, when set, the start's pass@1 plus this (per sweep value)
    warm_start_pass_rates: list[float] = field(
        default_factory=list
    )  # the low-pass-rate regime; [] = one warm start
    probe_variance: bool = True


@dataclass(frozen=True)
class ProbeConfig:
    """The gradient-variance probe: per-prompt gradient estimates, binned by task length (number of steps)."""

    # [] = every length the warm start trained on (its min_steps..max_steps): lengths outside it are refused
    lengths: list[int] = field(default_factory=list)
    prompts_per_length: int = 16
    repeats: int = 16  # independent gradient estimates per prompt
    arms: list[str] = field(default_factory=list)  # [] = compare.arms


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole `llm-rl` recipe."""

    output_dir: str = "runs/llm"
    arm: str = (
        "relabel"  # a registered arm name (llm_rl/arms/__init__.py) or `module:Class` of your own `Arm`
    )
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    grpo: GrpoArmConfig = field(default_factory=GrpoArmConfig)
    relabel: RelabelArmConfig = field(default_factory=RelabelArmConfig)
    mc_value: McValueArmConfig = field(default_factory=McValueArmConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
