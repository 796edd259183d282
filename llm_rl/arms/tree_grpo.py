"""Arm 4: tree-structured GRPO — a sampled tree of reasoning steps, each step's advantage from the leaves below it.

Why this arm: the relabeller has two ingredients, a *tree* (shared prefixes, branching at step boundaries) and an
*AlphaZero target* (train on the search's visit distribution, grounded by a value head). This arm keeps the tree and
drops the target: the tree is only a way to sample correlated completions whose outcomes tell which step mattered,
and the update is a policy-gradient step with no value head and no visit counts. If it matches the relabeller, the
AlphaZero target is not what helps; if it matches GRPO, the tree alone is not. The published tree methods of 2025
(TreeRL, TreeRPO, Tree-GRPO, SPO-tree) are of this kind; this file implements TreeRL's advantage.

The algorithm, for each batch of prompts:

1. **Grow one tree per prompt, level by level.** The root is the prompt. At level 0 the prompt gets
   ``root_branching`` children (TreeRL's M; default ``branching_factor``); at each later level every open node gets
   ``branching_factor``. A node of levels 1 .. ``depth - 1`` is a *segment* of ``branch_every`` reasoning steps,
   sampled one step at a time up to the verifier's step delimiter (at most ``task.max_step_tokens`` tokens a step:
   the relabeller's step splitting); a node of the last level is the rest of the completion in one piece (to EOS or
   the token limit, as GRPO samples). A level is ONE ``backend.sample(prefixes, n=width)`` over every open node of
   every prompt (plus one call per further step of a multi-step segment): the backend prefills each distinct prefix
   once and decodes its ``width`` continuations from copies of its KV cache, so a shared prefix is never prefilled
   twice. A step ends its path (its node is then a leaf) when it is the answer line
   (``verifier.is_terminal_step``), ends at EOS, or is empty — the rules of `llm_rl.arms.step_env`; a step cut by the
   token limit does not, and the next prefix appends the delimiter after it. The branch levels must end before
   ``task.max_steps`` (`check_config`); the last segment, like a GRPO completion, is bounded by
   ``task.max_completion_tokens`` only.
   With ``feedback="steps"`` a step that ``verifier.check_step`` rejects ends its path too, with reward 0 (as the
   MC-value arm's rollouts end at the first rejected step; in the last segment its steps are checked in order);
   with ``feedback="outcome"`` ``check_step`` is never called.
2. **Score the leaves.** A leaf's reward r(l) is the verifier's score of its path's completion (its steps joined by
   the delimiter, then the last segment's text).
3. **Advantages: TreeRL's step reward** (Hou et al., ACL 2025, "TreeRL: LLM Reinforcement Learning with On-Policy
   Tree Search", Sec. 3.2; github.com/THUDM/TreeRL). For every node n other than the root, L(n) the leaves at or
   below n::

       V(n) = mean_{l in L(n)} r(l)
       A(n) = [(V(n) - V(root)) + (V(n) - V(parent(n)))] / sqrt(|L(n)|)

   the global advantage plus the local one (against the parent, i.e. against the mean of n and its siblings'
   subtrees), divided by sqrt(|L(n)|) because a node's tokens are trained once per path through it. With
   ``depth = 1`` the tree is a GRPO group of ``root_branching`` completions with advantage 2 (r - mean r).
4. **Loss.** TreeRL trains on every root-to-leaf path, each token carrying its node's advantage. With the PPO-clip
   surrogate (`llm_rl.arms.losses.pg_token_loss`; the DAPO token mean over all paths of the batch; on-policy the ratio
   is 1 and the gradient is the plain policy gradient)::

       loss = - sum_paths sum_{t in path} A(n(t)) ratio_t / sum_paths |path|
            = - sum_n |L(n)| A(n) sum_{t in n} ratio_t / sum_n |L(n)| |n|

   The second form is what is computed: each sampled step is scored ONCE, given the exact prefix text it was
   sampled after, with the weight |L(n)| folded into its advantage (exact under clipping too: ``min(ratio a,
   clip(ratio) a)`` is positively homogeneous in ``a``).

Where it departs from TreeRL:

* Branching is at step boundaries (the relabeller's), not at EPTree's highest-entropy tokens, and the tree is grown
  breadth-first with a fixed width per level rather than by T forking rounds over M chains.
* Every leaf trains (TreeRL keeps ``num_traces`` of them); leaf rewards are the raw verifier scores (the paper's
  formula; the released code also subtracts the other leaves' mean from each leaf before backing values up); no KL.
* Identical sibling steps stay separate samples (their subtrees are independent draws), as GRPO keeps identical
  completions; the backend still prefills an identical prefix once.
* One batched call has one length limit: a last segment may have ``task.max_completion_tokens`` minus the most
  tokens any open path of its level has used, so no path exceeds ``max_completion_tokens`` and a shorter path may
  be cut up to the spread of its branch steps' lengths early.

Nothing here counts budget: the backend charges the tokens it samples and prefills, the verifier its calls.

The recipe section ``tree_grpo:`` is `llm_rl.arm_configs.TreeGrpoArmConfig` (importable from here too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from llm_rl.arm_configs import TreeGrpoArmConfig
from llm_rl.arms.base import Arm, ArmContext, Batch
from llm_rl.arms.losses import pg_token_loss
from llm_rl.config import ExperimentConfig, TaskConfig
from relabel_rl.config import ConfigError, validate

__all__ = [
    "SampledTree",
    "StepRow",
    "TaskLimits",
    "TreeAdvantages",
    "TreeBatch",
    "TreeGrpoArm",
    "TreeGrpoArmConfig",
    "check_config",
    "collect_trees",
    "grow_trees",
    "step_rows",
    "tree_pg_loss",
    "treerl_advantages",
    "with_old_logprobs",
]

Feedback = Literal["outcome", "steps"]


@dataclass(frozen=True)
class TaskLimits:
    """The task's length limits the tree obeys (the recipe's ``task.max_steps``, ``max_step_tokens``,
    ``max_completion_tokens``)."""

    max_steps: int
    max_step_tokens: int
    max_completion_tokens: int

    @classmethod
    def of(cls, task: TaskConfig) -> TaskLimits:
        return cls(task.max_steps, task.max_step_tokens, task.max_completion_tokens)


def check_config(cfg: TreeGrpoArmConfig, limits: TaskLimits) -> None:
    """Every knob in range, and a tree the task's limits can hold; `ConfigError` naming the keys otherwise."""
    validate(cfg, prefix="tree_grpo.")
    branch_steps = (cfg.depth - 1) * cfg.branch_every
    problems = []
    if branch_steps >= limits.max_steps:
        problems.append(
            f"tree_grpo.depth={cfg.depth} x tree_grpo.branch_every={cfg.branch_every}: the last level starts after "
            f"{branch_steps} steps, but task.max_steps={limits.max_steps} ends every path before it"
        )
    if branch_steps * limits.max_step_tokens >= limits.max_completion_tokens:
        problems.append(
            f"tree_grpo: {branch_steps} branch steps of up to task.max_step_tokens={limits.max_step_tokens} leave "
            f"no room for the last segment in task.max_completion_tokens={limits.max_completion_tokens}"
        )
    if problems:
        raise ConfigError(problems=problems)


# ---------------------------------------------------------------------------------------------------------------
# The tree


@dataclass
class SampledTree:
    """One prompt's sampled tree. Node 0 is the root (the prompt); every list is indexed by node, and a node's
    parent has a smaller index.

    Attributes:
      example: the task row (``prompt`` and what the verifier reads).
      parent: ``[N]`` each node's parent (-1 for the root).
      pieces: ``[N]`` each node's sampled steps as ``(prefix text it was sampled after, token ids)``: the step's
        tokens with the delimiter or EOS that ended it (the last segment is one piece). The root has none.
      path_steps: ``[N]`` the step texts from the root through the node (no delimiters; a last segment's steps
        are those ``verifier.split_steps`` finds in it).
      path_tokens: ``[N]`` tokens sampled from the root through the node.
      reward: ``[N]`` a leaf's reward, None for inner nodes (and for open nodes while growing).
      rejected: ``[N]`` the leaf ended at a step ``check_step`` rejected (reward 0).
    """

    example: dict
    parent: list[int] = field(default_factory=lambda: [-1])
    pieces: list[list[tuple[str, tuple[int, ...]]]] = field(default_factory=lambda: [[]])
    path_steps: list[tuple[str, ...]] = field(default_factory=lambda: [()])
    path_tokens: list[int] = field(default_factory=lambda: [0])
    reward: list[float | None] = field(default_factory=lambda: [None])
    rejected: list[bool] = field(default_factory=lambda: [False])

    def __len__(self) -> int:
        return len(self.parent)

    @property
    def leaves(self) -> list[int]:
        return [i for i, r in enumerate(self.reward) if r is not None]

    def add_child(self, parent: int) -> int:
        self.parent.append(parent)
        self.pieces.append([])
        self.path_steps.append(self.path_steps[parent])
        self.path_tokens.append(self.path_tokens[parent])
        self.reward.append(None)
        self.rejected.append(False)
        return len(self.parent) - 1

    def prefix(self, node: int, delimiter: str) -> str:
        """The text the node's next step is sampled after: the prompt, then each step and the delimiter."""
        return self.example["prompt"] + "".join(s + delimiter for s in self.path_steps[node])


def _ending(continuation: Any) -> str:
    return "eos" if continuation.finished else ("delimiter" if continuation.stopped else "length")


def _step_text(continuation: Any, delimiter: str) -> str:
    text = continuation.text
    return text[: -len(delimiter)] if delimiter and text.endswith(delimiter) else text


def _extend(
    tree: SampledTree, node: int, prefix: str, continuation: Any, verifier: Any, feedback: str
) -> bool:
    """Append one sampled step to ``node``; score the path if the step ends it. Returns whether it stays open."""
    text = _step_text(continuation, verifier.step_delimiter)
    previous = tree.path_steps[node]
    tree.pieces[node].append((prefix, tuple(int(t) for t in continuation.token_ids)))
    tree.path_steps[node] = (*previous, text)
    tree.path_tokens[node] += len(continuation.token_ids)
    if feedback == "steps" and verifier.check_step(list(previous), text, tree.example) is False:
        tree.reward[node], tree.rejected[node] = 0.0, True
        return False
    # `step_env`'s rules; task.max_steps never ends a branch step (`check_config`: the last level comes first)
    ends = _ending(continuation) == "eos" or not text.strip() or verifier.is_terminal_step(text)
    if ends:
        completion = verifier.step_delimiter.join(tree.path_steps[node])
        tree.reward[node] = float(verifier.score(completion, tree.example))
    return not ends


def _finish(
    tree: SampledTree, node: int, prefix: str, continuation: Any, verifier: Any, feedback: str
) -> None:
    """Make ``node`` a leaf holding the rest of the completion (one piece) and score its path."""
    previous = tree.path_steps[node]
    tree.pieces[node].append((prefix, tuple(int(t) for t in continuation.token_ids)))
    tree.path_steps[node] = (*previous, *verifier.split_steps(continuation.text))
    tree.path_tokens[node] += len(continuation.token_ids)
    if feedback == "steps":
        checked = list(previous)
        for step in verifier.split_steps(continuation.text):
            if verifier.check_step(checked, step, tree.example) is False:
                tree.reward[node], tree.rejected[node] = 0.0, True
                return
            checked.append(step)
    completion = "".join(s + verifier.step_delimiter for s in previous) + continuation.text
    tree.reward[node] = float(verifier.score(completion, tree.example))


def grow_trees(
    examples: Sequence[dict],
    backend: Any,
    verifier: Any,
    cfg: TreeGrpoArmConfig,
    limits: TaskLimits,
    *,
    feedback: Feedback = "outcome",
    generator: torch.Generator | None = None,
) -> list[SampledTree]:
    """Step 1-2 of the module docstring: one scored tree per example.

    Args:
      examples: task rows (``prompt`` and what the verifier reads).
      backend: a `llm_rl.generation.GenerationBackend` (the harness's metered sampler charges what it samples).
      verifier: scores completions and splits steps (pass a contained verifier: a failure then scores 0).
      cfg, limits: the tree's shape and the task's length limits (`check_config`).
      feedback: ``"outcome"`` (only final scores) or ``"steps"`` (a rejected step ends its path with reward 0).
      generator: the torch generator of the sampling.
    """
    if feedback not in ("outcome", "steps"):
        raise ValueError(f"feedback must be 'outcome' or 'steps', got {feedback!r}")
    check_config(cfg, limits)
    delimiter = verifier.step_delimiter
    trees = [SampledTree(dict(example)) for example in examples]
    frontier = [(t, 0) for t in range(len(trees))]  # open (tree, node) pairs
    sample = {"temperature": cfg.temperature, "generator": generator}
    for level in range(cfg.depth):
        if not frontier:
            break
        width = cfg.root_width if level == 0 else cfg.branching_factor
        prefixes = [trees[t].prefix(i, delimiter) for t, i in frontier]
        if level == cfg.depth - 1:  # the rest of every completion, in one piece
            room = limits.max_completion_tokens - max(trees[t].path_tokens[i] for t, i in frontier)
            samples = backend.sample(prefixes, n=width, max_new_tokens=room, stop=None, **sample)
            for (t, i), prefix, group in zip(frontier, prefixes, samples):
                for continuation in group:
                    _finish(trees[t], trees[t].add_child(i), prefix, continuation, verifier, feedback)
            break
        # a segment of `branch_every` steps: the first step branches `width` ways, the others continue each child
        samples = backend.sample(
            prefixes, n=width, max_new_tokens=limits.max_step_tokens, stop=delimiter, **sample
        )
        children = []
        for (t, i), prefix, group in zip(frontier, prefixes, samples):
            for continuation in group:
                child = trees[t].add_child(i)
                if _extend(trees[t], child, prefix, continuation, verifier, feedback):
                    children.append((t, child))
        for _ in range(cfg.branch_every - 1):
            if not children:
                break
            prefixes = [trees[t].prefix(i, delimiter) for t, i in children]
            samples = backend.sample(
                prefixes, n=1, max_new_tokens=limits.max_step_tokens, stop=delimiter, **sample
            )
            children = [
                (t, i)
                for (t, i), prefix, (continuation,) in zip(children, prefixes, samples)
                if _extend(trees[t], i, prefix, continuation, verifier, feedback)
            ]
        frontier = children
    return trees


# ---------------------------------------------------------------------------------------------------------------
# Advantages


@dataclass(frozen=True)
class TreeAdvantages:
    """TreeRL's quantities for every node of one tree (module docstring, step 3).

    Attributes:
      values: ``[N]`` V(n), the mean reward of the leaves at or below n.
      num_leaves: ``[N]`` |L(n)|.
      advantages: ``[N]`` A(n) (0 for the root, which has no tokens).
    """

    values: np.ndarray
    num_leaves: np.ndarray
    advantages: np.ndarray


def treerl_advantages(parent: Sequence[int], reward: Sequence[float | None]) -> TreeAdvantages:
    """TreeRL's step rewards for one tree: ``parent[0] = -1`` (the root), ``parent[i] < i``; ``reward[i]`` the leaf
    reward of each leaf, None for every inner node.

    Raises:
      ValueError: the arrays disagree, a parent index is not smaller than its child, or a node has no leaf below.
    """
    n = len(parent)
    if n != len(reward) or n < 2 or parent[0] != -1:
        raise ValueError("treerl_advantages(): need a root (parent -1) and one reward slot per node")
    has_child = np.zeros(n, dtype=bool)
    for i in range(1, n):
        if not 0 <= parent[i] < i:
            raise ValueError(f"treerl_advantages(): node {i} has parent {parent[i]}; parents must come first")
        has_child[parent[i]] = True
    sums, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
    for i in range(n):
        if (reward[i] is None) == (not has_child[i]):
            raise ValueError(f"treerl_advantages(): node {i} must have a reward exactly when it is a leaf")
        if reward[i] is not None:
            sums[i], counts[i] = float(reward[i]), 1
    for i in range(n - 1, 0, -1):  # children come after their parents: one backward sweep backs every leaf up
        sums[parent[i]] += sums[i]
        counts[parent[i]] += counts[i]
    values = sums / counts
    advantages = np.zeros(n)
    for i in range(1, n):
        advantages[i] = (2 * values[i] - values[0] - values[parent[i]]) / math.sqrt(counts[i])
    return TreeAdvantages(values=values, num_leaves=counts, advantages=advantages)


# ---------------------------------------------------------------------------------------------------------------
# Training rows and the loss


@dataclass(frozen=True)
class StepRow:
    """One sampled step (or last segment) to train on.

    Attributes:
      prefix: the text it was sampled after.
      token_ids: its sampled tokens (with the delimiter or EOS that ended it).
      advantage: A(n) of its node.
      weight: |L(n)|, the root-to-leaf paths through its node (how often TreeRL trains these tokens).
      old_logprobs: ``[len(token_ids)]`` the sampling policy's log-probs, when the batch is trained on more than
        once (`with_old_logprobs`); None: on-policy.
    """

    prefix: str
    token_ids: tuple[int, ...]
    advantage: float
    weight: int
    old_logprobs: torch.Tensor | None = None


@dataclass
class TreeBatch:
    """What collecting hands to the loss: the rows, the trees they came from, and statistics for the records."""

    rows: list[StepRow]
    trees: list[SampledTree]
    stats: dict[str, float] = field(default_factory=dict)


def step_rows(tree: SampledTree, adv: TreeAdvantages) -> list[StepRow]:
    """One `StepRow` per sampled step of every node of ``tree`` (a node's steps share its advantage)."""
    return [
        StepRow(prefix, ids, float(adv.advantages[n]), int(adv.num_leaves[n]))
        for n in range(1, len(tree))
        for prefix, ids in tree.pieces[n]
        if ids
    ]


def tree_stats(trees: Sequence[SampledTree], advantages: Sequence[TreeAdvantages]) -> dict[str, float]:
    """Numbers about a batch of trees for the train records."""
    leaf_rewards = [tree.reward[i] for tree in trees for i in tree.leaves]
    node_adv = np.concatenate([a.advantages[1:] for a in advantages]) if advantages else np.zeros(0)
    paths = [len(tree.path_steps[i]) for tree in trees for i in tree.leaves]
    uniform = [len({tree.reward[i] for i in tree.leaves}) == 1 for tree in trees]
    count = max(1, len(trees))
    return {
        "reward": float(np.mean(leaf_rewards)) if leaf_rewards else 0.0,
        "num_prompts": len(trees),
        "leaves_per_prompt": len(leaf_rewards) / count,
        "nodes_per_prompt": sum(len(tree) - 1 for tree in trees) / count,
        "mean_path_steps": float(np.mean(paths)) if paths else 0.0,
        "mean_abs_advantage": float(np.abs(node_adv).mean()) if node_adv.size else 0.0,
        "frac_zero_advantage": float((node_adv == 0).mean()) if node_adv.size else 0.0,
        "frac_uniform_prompts": sum(uniform) / count,
        "prompt_value": float(np.mean([a.values[0] for a in advantages])) if advantages else 0.0,
        "rejected_leaves": sum(sum(tree.rejected) for tree in trees),
    }


def collect_trees(
    examples: Sequence[dict],
    backend: Any,
    verifier: Any,
    cfg: TreeGrpoArmConfig,
    limits: TaskLimits,
    *,
    feedback: Feedback = "outcome",
    generator: torch.Generator | None = None,
) -> TreeBatch:
    """Steps 1-3: grow and score the trees, compute TreeRL's advantages, and cut the training rows."""
    trees = grow_trees(examples, backend, verifier, cfg, limits, feedback=feedback, generator=generator)
    advantages = [treerl_advantages(tree.parent, tree.reward) for tree in trees]
    rows = [row for tree, adv in zip(trees, advantages) for row in step_rows(tree, adv)]
    return TreeBatch(rows, trees, tree_stats(trees, advantages))


@torch.no_grad()
def with_old_logprobs(batch: TreeBatch, policy: Any, *, temperature: float) -> TreeBatch:
    """The batch with each row's sampling log-probs recorded (for training on it more than once: the ratio then
    moves from the second update and the clip matters)."""
    if not batch.rows:
        return batch
    scored = policy.token_logprobs(
        [r.prefix for r in batch.rows], [list(r.token_ids) for r in batch.rows], temperature=temperature
    )
    rows = [
        StepRow(r.prefix, r.token_ids, r.advantage, r.weight, scored.logprobs[i, : len(r.token_ids)].cpu())
        for i, r in enumerate(batch.rows)
    ]
    return TreeBatch(rows, batch.trees, batch.stats)


def tree_pg_loss(
    rows: Sequence[StepRow], policy: Any, *, clip_epsilon: float, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Step 4: the PPO-clip surrogate, token mean over every root-to-leaf path (module docstring), computed once
    per sampled step with the path count folded into the advantage.

    Returns ``(loss, metrics)``; with no rows a zero loss without grad (nothing to learn from).
    """
    if not rows:
        return torch.zeros(()), {"num_rows": 0}
    scored = policy.token_logprobs(
        [r.prefix for r in rows], [list(r.token_ids) for r in rows], temperature=temperature
    )
    logprobs, mask = scored.logprobs, scored.mask  # [R, T]
    old = logprobs.detach().clone()
    weighted = torch.zeros_like(logprobs)  # |L(n)| A(n) on every token of the row
    for i, r in enumerate(rows):
        weighted[i, : len(r.token_ids)] = r.weight * r.advantage
        if r.old_logprobs is not None:
            old[i, : len(r.token_ids)] = r.old_logprobs.to(old)
    path_tokens = float(sum(r.weight * len(r.token_ids) for r in rows))  # sum over paths of |path|
    token_mean = pg_token_loss(
        logprobs, old, weighted, mask, clip_epsilon=clip_epsilon, reduction="token_mean"
    )
    loss = token_mean * (mask.sum() / path_tokens)
    ratio = torch.exp((logprobs - old) * mask)
    clipped = ((ratio - 1.0).abs() > clip_epsilon).to(mask.dtype) * mask
    return loss, {
        "loss": float(loss.detach()),
        "num_rows": len(rows),
        "num_tokens": int(mask.sum()),
        "path_tokens": int(path_tokens),
        "clip_fraction": float(clipped.sum() / mask.sum().clamp(min=1.0)),
    }


# ---------------------------------------------------------------------------------------------------------------
# The arm: collect (steps 1-3) and loss (step 4)


class TreeGrpoArm(Arm):
    """Tree GRPO with TreeRL's advantages (module docstring)."""

    name = "tree_grpo"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.knobs = cfg.tree_grpo
        self.limits = TaskLimits.of(cfg.task)
        self.feedback: Feedback = (
            cfg.task.feedback
        )  # what the arm may learn from (docs/llm_rl.md, "Information parity")

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        check_config(cfg.tree_grpo, TaskLimits.of(cfg.task))

    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        batch = collect_trees(
            examples, ctx.sampler, ctx.verifier, self.knobs, self.limits, feedback=self.feedback,
            generator=ctx.generator,
        )  # fmt: skip
        if ctx.updates_per_batch > 1:  # trained on after the policy moves: keep the sampling log-probs
            batch = with_old_logprobs(batch, ctx.policy, temperature=self.knobs.temperature)
        return Batch(batch.rows, batch.stats)

    def loss(self, batch: Batch, policy: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return tree_pg_loss(
            batch.items, policy, clip_epsilon=self.knobs.clip_epsilon, temperature=self.knobs.temperature
        )
