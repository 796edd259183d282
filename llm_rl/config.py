"""The LLM-side recipe: one typed config for every `llm-rl` command, loaded with `relabel_rl.load_config`.

One recipe describes one experiment: the model, the task, the warm start that seeds every arm, the budget and how
it is measured, evaluation, the optimiser and logging the harness applies to every arm, and each arm's knobs.
`llm-rl train` runs ``arm`` once with ``seed``; `llm-rl compare` runs every arm in ``compare.arms`` for every seed in
``compare.seeds`` from the same warm-started checkpoint.

The sections shared by every arm live here; each arm's own section is a dataclass in `llm_rl.arm_configs`
(``grpo:`` `GrpoArmConfig`, ``relabel:`` `RelabelArmConfig`, ``mc_value:`` `McValueArmConfig`, ``tree_grpo:``
`TreeGrpoArmConfig`, ``rft:`` `RftArmConfig`), a module that imports no arm, so this one does not either (the arms
import the recipe, never the reverse). GRPO's knobs are TRL's own: the ``grpo.trl`` mapping is passed to
`trl.GRPOConfig`, which validates it (so an unknown TRL knob fails early, in TRL's words).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llm_rl.arm_configs import (
    GrpoArmConfig,
    McValueArmConfig,
    RelabelArmConfig,
    RftArmConfig,
    TreeGrpoArmConfig,
)
from llm_rl.harness.budget import BudgetAxis
from relabel_rl.config import (
    DISTINCT,
    NONEMPTY,
    PATH_OR_HUB_ID,
    Check,
    ConfigError,
    config_to_dict,
    knob,
    load_config,
)

TrackerName = Literal["tensorboard", "wandb", "trackio"]
# What verifier feedback every arm may use (docs/llm_rl.md, "Information parity"; llm_rl/harness/metering.py).
Feedback = Literal["outcome", "steps"]
# vLLM is an optional extra: a recipe that asks for it is refused at load time when it is not installed
VLLM_INSTALLED = Check(
    lambda backend: backend != "vllm" or importlib.util.find_spec("vllm") is not None,
    "hf, or vllm with vLLM installed (pip install 'relabel-rl[vllm]')",
)
NONEMPTY_DISTINCT = Check(lambda v: NONEMPTY(v) and DISTINCT(v), "non-empty and free of repeats")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class LoraSettings:
    """PEFT LoRA on the policy (the value head trains beside the adapter and is saved with it)."""

    enabled: bool = knob(False, help="train a PEFT LoRA adapter (and the value head) instead of every weight")
    r: int = knob(8, ge=1, help="LoRA rank (peft.LoraConfig r)")
    alpha: int = knob(16, gt=0, help="LoRA scaling numerator (peft.LoraConfig lora_alpha)")
    dropout: float = knob(
        0.0, ge=0.0, lt=1.0, help="dropout on the adapter's input (peft.LoraConfig lora_dropout)"
    )
    target_modules: list[str] | str = knob(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        check=NONEMPTY,
        help="module names (or a regex) to adapt, or 'all-linear' (peft.LoraConfig target_modules)",
    )
    peft: dict[str, Any] = knob(
        {},
        help="any other peft.LoraConfig field (use_rslora, use_dora, bias, modules_to_save, layers_to_transform, "
        "rank_pattern, alpha_pattern, init_lora_weights, ...), validated by PEFT before any model loads",
    )


@dataclass(frozen=True)
class ModelConfig:
    """The policy. ``name_or_path: tiny`` builds the built-in tiny preset into the run directory, saves it, and
    loads it back through `from_pretrained` — the same path as a local directory or a hub id."""

    name_or_path: str = knob(
        "tiny",
        check=PATH_OR_HUB_ID,
        help="'tiny' (the built-in preset), a local model directory, or a hub id",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = knob("float32", help="the policy's weight dtype")
    tiny_hidden_size: int = knob(64, ge=1, help="tiny preset: hidden width (a multiple of tiny_num_heads)")
    tiny_num_layers: int = knob(2, ge=1, help="tiny preset: transformer layers")
    tiny_num_heads: int = knob(4, ge=1, help="tiny preset: attention heads")
    tiny_max_positions: int = knob(256, ge=1, help="tiny preset: context length in tokens")
    value_head_hidden: int = knob(
        0, ge=0, help="0: a linear value head; >0: a one-hidden-layer MLP of this width"
    )
    lora: LoraSettings = field(default_factory=LoraSettings)
    generation_backend: Literal["hf", "vllm"] = knob(
        "hf",
        check=VLLM_INSTALLED,
        help="sampler of the hand-written arms: hf (transformers) or vllm (GPU; GRPO uses grpo.trl.use_vllm)",
    )

    def __post_init__(self) -> None:
        if self.name_or_path == "tiny" and self.tiny_hidden_size % self.tiny_num_heads:
            raise ValueError(
                f"'model.tiny_hidden_size' ({self.tiny_hidden_size}) must be a multiple of 'model.tiny_num_heads' "
                f"({self.tiny_num_heads})"
            )


@dataclass(frozen=True)
class TaskDataConfig:
    """Your own task rows instead of the verifier's generator: a file, a saved dataset or a hub id, its columns
    mapped onto the verifier's example fields (loaded and checked by `llm_rl.harness.user_data`)."""

    path: str | None = knob(
        None,
        check=NONEMPTY,
        help="a .jsonl/.json/.parquet/.csv file, a save_to_disk directory, a folder of data files, or a hub "
        "dataset id; null: the verifier generates the rows",
    )
    name: str | None = knob(None, check=NONEMPTY, help="the hub dataset's configuration name (e.g. main)")
    train_split: str = knob("train", check=NONEMPTY, help="the source's split the training rows come from")
    test_split: str | None = knob(
        None,
        check=NONEMPTY,
        help="the source's held-out split; null: split the train rows by prompt hash (~20% test, disjoint)",
    )
    columns: dict[str, str] = knob(
        {},
        help="example field -> the data's column, e.g. {prompt: question, answer: label}; unmapped fields are "
        "read from the column of their own name",
    )


@dataclass(frozen=True)
class TaskConfig:
    """The task: a verifier (built-in name, plugin name, or ``module:attr``), its generated dataset, and the
    verifier feedback every arm may use.

    ``feedback`` is one setting for the whole experiment, so every arm gets the same information:
    ``outcome`` (the default, the seed's claim): only the verifier's score of a finished completion — no arm calls
    ``check_step`` (the harness's metered verifier refuses it); ``steps``: every arm may also use ``check_step``,
    each in its natural way (the relabeller prunes rejected candidates, GRPO gets DeepSeekMath's process
    supervision, the MC arm's episodes end at the first rejected step); it needs a verifier with step checks.
    """

    verifier: str = knob(
        "chain_arithmetic",
        check=NONEMPTY,
        help="a built-in verifier (llm-rl tasks), a plugin name, or module:attr of your own Verifier",
    )
    feedback: Feedback = knob(
        "outcome",
        help="what every arm may learn from: outcome (the final score only), or steps (check_step too); the "
        "report labels every number with it",
    )
    train_size: int = knob(512, ge=1, help="training rows (RL prompts); with task.data: at most this many")
    # >= 500 by default, so that a pass rate's binomial error (<= 0.022) is well below the training noise a
    # comparison measures (the report evaluates the first eval.num_examples of them)
    test_size: int = knob(
        500,
        ge=1,
        help="held-out rows (evaluation, the first of the test split); with task.data: at most this many",
    )
    validation_size: int = knob(
        500,
        ge=1,
        help="test-split rows drawn after the test rows: the validation split llm-rl tune scores on (at least "
        "eval.num_examples)",
    )
    difficulty: dict[str, Any] = knob({}, help="the verifier's difficulty knobs, passed to Verifier.generate")
    max_steps: int = knob(8, ge=1, help="reasoning steps in one completion, at most")
    max_step_tokens: int = knob(24, ge=1, help="new tokens per step, at most (step-wise arms)")
    max_completion_tokens: int = knob(
        160, ge=1, help="tokens of a whole completion, at most (GRPO, evaluation)"
    )
    verifier_timeout: float | None = knob(
        None,
        gt=0.0,
        help="seconds per contained verifier call; null: auto (trusted in-process with a deadline)",
    )
    data: TaskDataConfig = field(default_factory=TaskDataConfig)

    def __post_init__(self) -> None:
        sizes = ("train_size", "test_size", "validation_size", "max_steps", "max_step_tokens")
        for n in (*sizes, "max_completion_tokens"):
            _positive(f"task.{n}", getattr(self, n))


@dataclass(frozen=True)
class WarmStartConfig:
    """SFT (TRL `SFTTrainer`) on generated gold solutions until a held-out pass rate or a step count."""

    enabled: bool = knob(True, help="warm-start every arm from one SFT checkpoint (false: the base model)")
    target_pass_rate: float | None = knob(
        0.25,
        ge=0.0,
        le=1.0,
        help="stop once greedy pass@1 on held-out rows reaches this; null: run max_steps",
    )
    max_steps: int = knob(400, ge=1, help="SFT optimizer steps, at most")
    eval_every: int = knob(50, ge=1, help="SFT steps between held-out pass@1 measurements")
    learning_rate: float = knob(3e-3, gt=0.0, help="SFT learning rate")
    batch_size: int = knob(
        32, ge=1, help="the global SFT batch: shared by the processes under accelerate launch"
    )
    eval_examples: int = knob(64, ge=1, help="held-out rows the stopping rule's pass@1 is measured on")
    difficulty: dict[str, Any] | None = knob(
        None,
        help="the warm start's own task difficulty (e.g. {min_steps: 1, max_steps: 6}: one warm start on a mixture "
        "covering every length of a sweep); null: task.difficulty (with compare.sweep over lengths: its range)",
    )


@dataclass(frozen=True)
class BudgetConfig:
    """Every arm stops when the counter on ``axis`` reaches ``limit``; evaluation every ``eval_every`` units.
    Axes: ``generated_tokens``, ``prefill_tokens``, ``total_tokens``, ``verifier_calls`` (``outcome_`` + ``step_``),
    ``outcome_verifier_calls``, ``step_verifier_calls``, ``prompts``, ``optimizer_steps``, ``wall_time``
    (`llm_rl.harness.budget`)."""

    axis: BudgetAxis = knob("generated_tokens", help="the counter every arm is stopped on")
    limit: float = knob(40_000, gt=0.0, help="stop when the counter on axis reaches this")
    eval_every: float = knob(
        10_000, gt=0.0, help="evaluate every this many units of axis (and at start and end)"
    )

    def __post_init__(self) -> None:
        if self.eval_every > self.limit:
            raise ValueError(
                f"'budget.eval_every' ({self.eval_every:g}) exceeds 'budget.limit' ({self.limit:g}): the learning "
                "curve would have no point between the start and the end"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (never trained on): greedy pass@1 (batched) and sampled pass@k, with every row's result
    kept in the eval record, so the report pairs arms item by item. ``num_examples`` <= ``task.test_size``."""

    num_examples: int = knob(
        500,
        ge=1,
        help="held-out rows evaluated (the first of eval.split), each row's result kept for pairing",
    )
    pass_k: int = knob(4, ge=0, help="samples per row for the unbiased pass@k; 0: greedy pass@1 only")
    temperature: float = knob(
        1.0, gt=0.0, help="sampling temperature of the pass@k samples (pass@1 is greedy)"
    )
    split: Literal["test", "validation"] = knob(
        "test",
        help="rows evaluated: test (the report's) or validation (llm-rl tune's; disjoint from test and train)",
    )


@dataclass(frozen=True)
class OptimConfig:
    """The harness's optimiser and update schedule for the hand-written arms (relabel, mc_value, your own); GRPO
    takes its own from ``grpo.trl`` (``learning_rate``, and ``num_iterations`` / ``steps_per_generation`` for
    several updates per generation)."""

    learning_rate: float = knob(1e-3, gt=0.0, help="AdamW learning rate")
    weight_decay: float = knob(0.0, ge=0.0, help="AdamW weight decay")
    max_grad_norm: float = knob(1.0, gt=0.0, help="gradients are clipped to this global norm")
    prompts_per_step: int = knob(
        8, ge=1, help="prompts collected per batch (the global batch under accelerate launch)"
    )
    # Optimiser updates per collected batch: `epochs` passes over it, each in `minibatches` parts (PPO's epochs x
    # minibatches; TRL's num_iterations x steps_per_generation). 1 x 1 is one update per batch, on-policy.
    epochs: int = knob(1, ge=1, help="passes over each collected batch")
    minibatches: int = knob(1, ge=1, help="optimizer updates per pass (the batch cut in this many parts)")
    checkpoint_every: int = knob(
        10, ge=1, help="optimizer steps between checkpoints (written at the end of the batch that crosses it)"
    )
    # The global batch is collected in this many equal chunks, each seeded by (seed, step, chunk) and shared by
    # the processes of an `accelerate launch` run; None: one per process. Runs with the same value give the same
    # results whatever the number of processes (see llm_rl/harness/distributed.py).
    prompt_chunks: int | None = knob(
        None, ge=1, help="equal seeded chunks the global batch is collected in (null: one per process)"
    )


@dataclass(frozen=True)
class LoggingConfig:
    """Where records go besides the run's ``metrics.jsonl``: experiment trackers through accelerate's tracker API
    (``tensorboard`` writes under ``RUN_DIR/trackers``; ``wandb`` and ``trackio`` need their package and login).
    ``--logging.report_to tensorboard`` or a list; none by default."""

    report_to: list[TrackerName] | TrackerName = knob(
        [], help="experiment trackers besides metrics.jsonl: tensorboard, wandb, trackio (a name or a list)"
    )
    project: str = knob(
        "relabel-rl", check=NONEMPTY, help="the trackers' project name; each run is named after its directory"
    )

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

    arm: str = knob(check=NONEMPTY, help="the arm this variant runs (a registered name or module:Class)")
    overrides: dict[str, Any] = knob(
        {}, help="recipe overrides for this variant's runs only (arm sections, optim.*, task.feedback)"
    )


@dataclass(frozen=True)
class SweepConfig:
    """A difficulty axis of `compare`: every arm and variant runs, for every seed, at each value. ``knob: length``
    sets the task's number of operations (``min_steps = max_steps = value``); any other name is a difficulty knob
    of ``task.verifier`` set to the value. One warm start serves every value (``warm_start.difficulty``).

    ``scale_budget`` answers a confound of a length sweep at one budget: a token budget buys a length-6 run about a
    third of the prompts (and updates) it buys a length-2 run, so a gap that closes at length 6 may only mean that
    every arm learned less there. Scaled, ``budget.limit`` and ``budget.eval_every`` are per unit of the value, and
    each length gets about the same number of prompts."""

    # `values` comes first: once the field `knob` is defined, the name no longer means the function in this body
    values: list[int | float] = knob([], help="the values the sweep runs at; [] = no sweep")
    scale_budget: bool = knob(
        False,
        help="true: budget.limit and budget.eval_every are per unit of the sweep value (a run at value v gets v x "
        "them); false: every value gets the same budget",
    )
    knob: str = knob(
        "length",
        check=NONEMPTY,
        help="length (the task's number of operations), or any difficulty knob of task.verifier",
    )


@dataclass(frozen=True)
class CompareConfig:
    """`llm-rl compare`: arms and variants x seeds (x sweep values, or x warm-start pass rates) at equal budget."""

    # registered arm names (llm_rl/arms/__init__.py) or `module:Class` paths of your own `Arm` subclasses
    arms: list[str] = knob(
        ["grpo", "relabel", "mc_value"],
        check=NONEMPTY_DISTINCT,
        help="registered arm names (grpo, relabel, mc_value, tree_grpo, rft) or module:Class paths of your own "
        "Arm subclasses",
    )
    variants: dict[str, VariantConfig] = knob(
        {},
        help="named variants run like arms in their own run directories: {name: {arm: relabel, overrides: {...}}}",
    )
    seeds: list[int] = knob(
        [0, 1, 2], ge=0, lt=2**63, check=NONEMPTY_DISTINCT, help="one run per arm (or variant) and seed"
    )
    baseline: str = knob(
        "grpo",
        check=NONEMPTY,
        help="the arm or variant every paired difference is taken against, under the same task.feedback",
    )
    contrasts: list[list[str]] = knob(
        [],
        help="extra contrasts for the report's Holm family, each [a, b] (arm or variant names): a - b, paired",
    )
    sweep: SweepConfig = field(default_factory=SweepConfig)
    pass_threshold: float = knob(
        0.5, ge=0.0, le=1.0, help="report the budget each arm needed to reach this held-out pass@1"
    )
    threshold_gain: float | None = knob(
        None,
        gt=0.0,
        le=1.0,
        help="when set, the threshold is the start's pass@1 plus this (per sweep value), not pass_threshold",
    )
    warm_start_pass_rates: list[float] = knob(
        [], ge=0.0, le=1.0, check=DISTINCT, help="the low-pass-rate regime: one warm start per rate; [] = one"
    )
    probe_variance: bool = knob(True, help="run the gradient-variance probe and report it")


@dataclass(frozen=True)
class ProbeConfig:
    """The gradient-variance probe: per-prompt gradient estimates, binned by task length (number of steps)."""

    lengths: list[int] = knob(
        [],
        ge=1,
        check=DISTINCT,
        help="task lengths (operations) to probe; [] = every length the warm start trained on (outside it: refused)",
    )
    prompts_per_length: int = knob(16, ge=1, help="held-out prompts per length")
    repeats: int = knob(16, ge=2, help="independent gradient estimates per prompt")
    arms: list[str] = knob([], check=DISTINCT, help="the arms probed; [] = compare.arms")


@dataclass(frozen=True)
class TuneConfig:
    """`llm-rl tune` (llm_rl/tune.py): per-arm hyper-parameters picked on the validation split, never on the test
    rows the report scores. ``grid``: arm -> {dotted recipe key -> the values to try} (every combination of an
    arm's values is one grid point; the keys are the arm's own section and ``optim.*``). ``seeds``: the tuning
    runs' seeds, disjoint from ``compare.seeds``. ``budget``: a partial ``budget:`` section for the tuning runs
    (empty: the recipe's budget). ``chosen``: arm -> {dotted key -> value}, written by `llm-rl tune` into its
    tuned recipe; `llm-rl train` and `llm-rl compare` apply an arm's chosen values to that arm's runs only."""

    grid: dict[str, dict[str, list[Any]]] = knob({}, help="arm -> {dotted recipe key -> values to try}")
    seeds: list[int] = knob(
        [100],
        ge=0,
        lt=2**63,
        check=NONEMPTY_DISTINCT,
        help="the tuning runs' seeds (disjoint from compare.seeds)",
    )
    budget: dict[str, Any] = knob(
        {}, help="a partial budget section for the tuning runs (empty: the recipe's)"
    )
    chosen: dict[str, dict[str, Any]] = knob({}, help="arm -> {dotted key -> value}: written by llm-rl tune")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole `llm-rl` recipe."""

    output_dir: str = knob("runs/llm", check=NONEMPTY, help="where the base model, warm start and runs go")
    arm: str = knob(
        "relabel", check=NONEMPTY, help="llm-rl train: a registered arm name or module:Class of your own Arm"
    )
    seed: int = knob(0, ge=0, lt=2**63, help="llm-rl train: the run's seed (order, samples, initialisation)")
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
    tree_grpo: TreeGrpoArmConfig = field(default_factory=TreeGrpoArmConfig)
    rft: RftArmConfig = field(default_factory=RftArmConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any], *, what: str) -> ExperimentConfig:
    """``cfg`` with dotted-key ``overrides`` applied and the whole recipe validated again.

    Raises:
      ConfigError: an unknown key or a bad value, prefixed with ``what`` (where the overrides come from).
    """
    try:
        return load_config(ExperimentConfig, data=config_to_dict(cfg), overrides=dict(overrides))
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def arm_config(cfg: ExperimentConfig, arm: str) -> ExperimentConfig:
    """The recipe as arm ``arm`` runs it: ``tune.chosen[arm]`` applied (the values `llm-rl tune` chose for that
    arm, e.g. its learning rate, which other arms do not share), and the ``tune`` section narrowed to them, so a
    run records the values it used and where they came from, and a new grid or another arm's values leave the
    run's config unchanged."""
    chosen = dict(cfg.tune.chosen.get(arm, {}))
    narrowed = TuneConfig(chosen={arm: chosen} if chosen else {})
    if chosen:
        cfg = with_overrides(cfg, chosen, what=f"'tune.chosen.{arm}'")
    return dataclasses.replace(cfg, tune=narrowed)
