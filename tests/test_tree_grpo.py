"""Tree GRPO: TreeRL's advantages on fixed trees against hand-computed numbers, the tree a scripted backend grows,
step endings and step feedback, the loss against TreeRL's per-path form, shared prefixes prefilled once (exact token
accounting with the real backend), and a short end-to-end run on the tiny preset."""

from __future__ import annotations

import math

import pytest
import torch
from _scripted_arms import (
    AnswerIs7,
    ScriptedBackend,
    SpyVerifier,
    cont,
    same_records,
    train_recipe,
    train_with_cli,
)

from llm_rl.arms import tree_grpo as tg
from llm_rl.arms.losses import pg_token_loss
from relabel_rl.config import ConfigError

LIMITS = tg.TaskLimits(max_steps=4, max_step_tokens=8, max_completion_tokens=40)
S2 = math.sqrt(2.0)

# ---------------------------------------------------------------------------------------------------------------
# Advantages by hand

#            root (V = 2/5)
#        /        |        \
#     a (1/2)   b: r=1    c (0)
#     /    \              /   \
#  a1: 1  a2: 0       c1: 0  c2: 0
FIXED_PARENT = [-1, 0, 0, 0, 1, 1, 3, 3]  # root, a, b, c, a1, a2, c1, c2
FIXED_REWARD = [None, None, 1.0, None, 1.0, 0.0, 0.0, 0.0]
FIXED_ADVANTAGE = [
    0.0,
    (0.1 + 0.1) / S2,  # a: V 0.5, global 0.5-0.4, local 0.5-0.4 (its parent is the root), 2 leaves
    (0.6 + 0.6) / 1,  # b: a leaf with r = 1
    (-0.4 - 0.4) / S2,  # c: V 0
    (0.6 + 0.5) / 1,  # a1: global 1-0.4, local 1-0.5
    (-0.4 - 0.5) / 1,  # a2
    (-0.4 - 0.0) / 1,  # c1: local 0 (its parent's value is 0 too)
    (-0.4 - 0.0) / 1,  # c2
]


def test_treerl_advantages_of_a_fixed_tree() -> None:
    adv = tg.treerl_advantages(FIXED_PARENT, FIXED_REWARD)
    assert adv.values.tolist() == pytest.approx([0.4, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert adv.num_leaves.tolist() == [5, 2, 1, 2, 1, 1, 1, 1]
    assert adv.advantages.tolist() == pytest.approx(FIXED_ADVANTAGE)


def test_depth_one_is_a_grpo_group_with_twice_the_centred_reward() -> None:
    adv = tg.treerl_advantages([-1, 0, 0, 0, 0], [None, 1.0, 0.0, 0.0, 1.0])
    assert adv.advantages.tolist() == pytest.approx([0.0, 1.0, -1.0, -1.0, 1.0])
    same = tg.treerl_advantages([-1, 0, 0], [None, 1.0, 1.0])
    assert same.advantages.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("parent", "reward", "says"),
    [
        ([-1, 0, 0], [None, 1.0, None], "reward exactly when it is a leaf"),  # a leaf without a reward
        ([-1, 0, 1], [None, 1.0, 0.0], "reward exactly when it is a leaf"),  # an inner node with one
        ([-1, 2, 0], [None, 1.0, None], "parents must come first"),
        ([0, 0], [None, 1.0], "need a root"),
    ],
)
def test_bad_trees_are_refused(parent, reward, says) -> None:
    with pytest.raises(ValueError, match=says):
        tg.treerl_advantages(parent, reward)


# ---------------------------------------------------------------------------------------------------------------
# Growing the tree


def fixed_tree_script() -> dict:
    """The fixed tree above, as a scripted backend grows it: 3 first steps (b is an answer line), then the rest."""
    return {
        "Q\n": [cont("x=1"), cont("Answer: 7"), cont("x=2")],
        "Q\nx=1\n": [cont("Answer: 7", "eos"), cont("Answer: 3", "eos")],
        "Q\nx=2\n": [cont("Answer: 0", "eos"), cont("y\nAnswer: 5", "eos")],
    }


def test_the_scripted_tree_and_its_rows() -> None:
    backend, verifier = ScriptedBackend(fixed_tree_script()), SpyVerifier(AnswerIs7())
    cfg = tg.TreeGrpoArmConfig(branching_factor=2, root_branching=3, depth=2)
    batch = tg.collect_trees([{"prompt": "Q\n"}], backend, verifier, cfg, LIMITS)
    (tree,) = batch.trees
    assert tree.parent == FIXED_PARENT and tree.reward == FIXED_REWARD
    # one call per level: the prompt branches 3 ways, then the two open nodes 2 ways each, to the end
    first, rest = backend.calls
    assert first == {"prefixes": ["Q\n"], "n": 3, "max_new_tokens": 8, "stop": "\n"}
    assert rest["prefixes"] == ["Q\nx=1\n", "Q\nx=2\n"] and rest["n"] == 2 and rest["stop"] is None
    assert rest["max_new_tokens"] == 40 - 4  # the limit minus the longest open path ("x=1\n")
    assert verifier.scored == [
        "Answer: 7",
        "x=1\nAnswer: 7",
        "x=1\nAnswer: 3",
        "x=2\nAnswer: 0",
        "x=2\ny\nAnswer: 5",
    ]
    assert verifier.checked == []  # outcome feedback never asks for step checks
    # one row per sampled step, with its node's advantage and path count
    got = [
        (r.prefix, bytes(t for t in r.token_ids if t > 2).decode(), r.advantage, r.weight) for r in batch.rows
    ]
    expected = [
        ("Q\n", "x=1\n", FIXED_ADVANTAGE[1], 2),
        ("Q\n", "Answer: 7\n", FIXED_ADVANTAGE[2], 1),
        ("Q\n", "x=2\n", FIXED_ADVANTAGE[3], 2),
        ("Q\nx=1\n", "Answer: 7", FIXED_ADVANTAGE[4], 1),
        ("Q\nx=1\n", "Answer: 3", FIXED_ADVANTAGE[5], 1),
        ("Q\nx=2\n", "Answer: 0", FIXED_ADVANTAGE[6], 1),
        ("Q\nx=2\n", "y\nAnswer: 5", FIXED_ADVANTAGE[7], 1),
    ]
    assert [(p, t, pytest.approx(a), w) for p, t, a, w in expected] == got
    assert batch.rows[3].token_ids[-1] == 2  # the EOS that ended the completion is trained on
    s = batch.stats
    assert s["reward"] == pytest.approx(0.4) and s["leaves_per_prompt"] == 5 and s["nodes_per_prompt"] == 7
    assert s["prompt_value"] == pytest.approx(0.4) and s["frac_uniform_prompts"] == 0.0
    assert s["mean_path_steps"] == pytest.approx((1 + 2 + 2 + 2 + 3) / 5)  # the last segments' steps counted


def test_segments_of_two_steps_and_how_steps_end() -> None:
    script = {
        "Q\n": [cont("x=1"), cont("abcd", "length"), cont("", "delimiter")],
        "Q\nx=1\n": [cont("x=2")],
        "Q\nabcd\n": [cont("the end", "eos")],  # the length-cut step is continued after an added delimiter
        "Q\nx=1\nx=2\n": [cont("Answer: 7", "eos")],
    }
    backend, verifier = ScriptedBackend(script), SpyVerifier(AnswerIs7())
    cfg = tg.TreeGrpoArmConfig(branching_factor=1, root_branching=3, depth=2, branch_every=2)
    (tree,) = tg.grow_trees([{"prompt": "Q\n"}], backend, verifier, cfg, LIMITS)
    # the empty step ends its path at once; the EOS step ends the second; only x=1, x=2 reaches the last level
    assert [c["n"] for c in backend.calls] == [3, 1, 1]
    assert backend.calls[1]["prefixes"] == ["Q\nx=1\n", "Q\nabcd\n"] and backend.calls[1]["stop"] == "\n"
    assert tree.parent == [-1, 0, 0, 0, 1]
    assert tree.path_steps[1] == ("x=1", "x=2") and len(tree.pieces[1]) == 2
    assert tree.path_steps[2] == ("abcd", "the end") and tree.reward[2] == 0.0
    assert [tree.path_steps[i] for i in (4, 1)] == [("x=1", "x=2", "Answer: 7"), ("x=1", "x=2")]
    assert tree.path_steps[3] == ("",) and tree.reward[3] == 0.0
    assert tree.reward[4] == 1.0 and verifier.scored[-1] == "x=1\nx=2\nAnswer: 7"
    # the length-cut step's tokens are only those sampled (no delimiter), the next one is sampled after "abcd\n"
    assert tree.pieces[2] == [("Q\n", tuple(map(ord, "abcd"))), ("Q\nabcd\n", (*map(ord, "the end"), 2))]
    # the branch levels must end before task.max_steps
    with pytest.raises(ConfigError, match=r"task\.max_steps=2"):
        tg.grow_trees([{"prompt": "Q\n"}], ScriptedBackend(script), AnswerIs7(), cfg, tg.TaskLimits(2, 8, 40))


def test_step_feedback_ends_a_path_at_a_rejected_step_with_reward_zero() -> None:
    script = {
        "Q\n": [cont("bad"), cont("x=1")],
        "Q\nx=1\n": [cont("y=bad\nAnswer: 7", "eos"), cont("Answer: 7", "eos")],
    }
    verifier = SpyVerifier(AnswerIs7())
    cfg = tg.TreeGrpoArmConfig(branching_factor=2, depth=2)
    batch = tg.collect_trees(
        [{"prompt": "Q\n"}], ScriptedBackend(script), verifier, cfg, LIMITS, feedback="steps"
    )
    (tree,) = batch.trees
    assert tree.parent == [-1, 0, 0, 2, 2]
    assert tree.reward == [None, 0.0, None, 0.0, 1.0] and tree.rejected == [False, True, False, True, False]
    # a rejected step is not scored; the last segment's steps are checked in order up to the first rejection
    assert verifier.scored == ["x=1\nAnswer: 7"]
    assert verifier.checked == [((), "bad"), ((), "x=1"), (("x=1",), "y=bad"), (("x=1",), "Answer: 7")]
    assert batch.stats["rejected_leaves"] == 2
    with pytest.raises(ValueError, match="feedback"):
        tg.grow_trees([{"prompt": "Q\n"}], ScriptedBackend(script), verifier, cfg, LIMITS, feedback="dense")


def test_config_the_task_cannot_hold_is_refused_naming_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"tree_grpo.depth=4 .* task.max_steps=3"):
        tg.check_config(tg.TreeGrpoArmConfig(depth=4), tg.TaskLimits(3, 8, 100))
    with pytest.raises(ConfigError, match="no room for the last segment"):
        tg.check_config(tg.TreeGrpoArmConfig(depth=3), tg.TaskLimits(8, 8, 16))
    with pytest.raises(ConfigError, match=r"tree_grpo\.branching_factor"):
        tg.check_config(tg.TreeGrpoArmConfig(branching_factor=0), LIMITS)
    cfg = tg.TreeGrpoArmConfig(branching_factor=3, root_branching=2, depth=3)
    assert cfg.leaves_per_prompt == 18 and tg.TreeGrpoArmConfig().leaves_per_prompt == 4


# ---------------------------------------------------------------------------------------------------------------
# The tiny model: the loss, prefill accounting, a short run


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from llm_rl.model import build_tiny_model

    path = tmp_path_factory.mktemp("tree_tiny") / "base"
    return str(build_tiny_model(path, hidden_size=32, num_layers=1, num_heads=2))


def _tokenised(policy, script: dict) -> dict:
    """The scripted continuations with the tiny tokenizer's ids (the delimiter's, or EOS, at the end)."""
    from llm_rl.generation import Continuation

    def ids(text: str, finished: bool) -> tuple[int, ...]:
        (body,) = policy.encode([text if finished else text + "\n"], add_special_tokens=False)
        return (*body, policy.eos_token_id) if finished else tuple(body)

    return {
        p: [Continuation(c.text, ids(c.text, c.finished), 0.0, c.finished, c.stopped) for c in group]
        for p, group in script.items()
    }


def test_loss_is_treerls_token_mean_over_root_to_leaf_paths(tiny_model) -> None:
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    cfg = tg.TreeGrpoArmConfig(branching_factor=2, root_branching=3, depth=2)
    backend = ScriptedBackend(_tokenised(policy, fixed_tree_script()))
    batch = tg.collect_trees([{"prompt": "Q\n"}], backend, AnswerIs7(), cfg, LIMITS)
    loss, metrics = tg.tree_pg_loss(batch.rows, policy, clip_epsilon=0.2, temperature=1.0)
    loss.backward()
    got = [p.grad.clone() for p in policy.model.parameters()]
    policy.zero_grad()
    # TreeRL's own form: one row per root-to-leaf path, each token with its node's advantage; token mean
    (tree,) = batch.trees
    adv = tg.treerl_advantages(tree.parent, tree.reward)
    paths, advantages = [], []
    for leaf in tree.leaves:
        chain, node = [], leaf
        while node > 0:
            chain.insert(0, node)
            node = tree.parent[node]
        paths.append([t for n in chain for _, piece in tree.pieces[n] for t in piece])
        advantages.append([adv.advantages[n] for n in chain for _, piece in tree.pieces[n] for _ in piece])
    scored = policy.token_logprobs(["Q\n"] * len(paths), paths)
    adv_t = torch.zeros_like(scored.logprobs)
    for i, a in enumerate(advantages):
        adv_t[i, : len(a)] = torch.tensor(a)
    reference = pg_token_loss(scored.logprobs, scored.logprobs.detach(), adv_t, scored.mask, clip_epsilon=0.2)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6) and loss.item() != 0.0
    # the shared first steps are scored once, though two paths run through each
    assert metrics["path_tokens"] == int(scored.mask.sum()) > metrics["num_tokens"]
    for g, p in zip(got, policy.model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    # recorded sampling log-probs change nothing on-policy; with a moved policy the ratio is clipped
    again = tg.with_old_logprobs(batch, policy, temperature=1.0)
    assert all(r.old_logprobs is not None for r in again.rows)
    same, _ = tg.tree_pg_loss(again.rows, policy, clip_epsilon=0.2, temperature=1.0)
    assert same.item() == pytest.approx(loss.item(), abs=1e-6)
    shifted = [
        tg.StepRow(r.prefix, r.token_ids, r.advantage, r.weight, r.old_logprobs - 1.0) for r in again.rows
    ]
    _, clipped = tg.tree_pg_loss(shifted, policy, clip_epsilon=0.2, temperature=1.0)
    assert clipped["clip_fraction"] == 1.0
    empty, m = tg.tree_pg_loss([], policy, clip_epsilon=0.2, temperature=1.0)
    assert not empty.requires_grad and m["num_rows"] == 0


class RecordingBackend:
    """Wraps a backend and records the prefixes of every call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.budget = inner.budget
        self.calls: list[list[str]] = []

    def sample(self, prefixes, **kwargs):
        self.calls.append(list(prefixes))
        return self.inner.sample(prefixes, **kwargs)


def test_shared_prefixes_are_prefilled_once_and_every_token_is_counted(tiny_model) -> None:
    from llm_rl.generation import HFBackend
    from llm_rl.harness.budget import Budget
    from llm_rl.model import load_policy

    policy = load_policy(tiny_model)
    budget = Budget()
    backend = RecordingBackend(HFBackend(policy, budget))
    cfg = tg.TreeGrpoArmConfig(branching_factor=2, root_branching=3, depth=3)
    limits = tg.TaskLimits(max_steps=6, max_step_tokens=6, max_completion_tokens=30)
    examples = [{"prompt": "3+4=?\n"}, {"prompt": "2*5=?\n"}]
    batch = tg.collect_trees(
        examples, backend, AnswerIs7(), cfg, limits, generator=torch.Generator().manual_seed(0)
    )
    n_tokens = lambda text: len(policy.encode([text])[0])  # noqa: E731 (with BOS, as the backend encodes)
    # one call per level; each call prefills its distinct prefixes once: the budget holds exactly that
    assert len(backend.calls) == 3 and backend.calls[0] == [ex["prompt"] for ex in examples]
    assert budget.prefill_tokens == sum(n_tokens(p) for call in backend.calls for p in dict.fromkeys(call))
    # no prefix is sampled from in two calls: a prompt is prefilled once however many leaves lie below it
    seen = [p for call in backend.calls for p in dict.fromkeys(call)]
    assert len(seen) == len(set(seen))
    # every sampled token is one training token of exactly one row
    assert budget.generated_tokens == sum(len(r.token_ids) for r in batch.rows) > 0
    # the same leaves sampled as independent chains would prefill every prefix on their path once per leaf
    chains = 0
    for tree in batch.trees:
        for leaf in tree.leaves:
            node = leaf
            while node > 0:
                chains += sum(n_tokens(prefix) for prefix, _ in tree.pieces[node])
                node = tree.parent[node]
    assert budget.prefill_tokens < chains
    assert batch.stats["leaves_per_prompt"] > cfg.root_width


# ---------------------------------------------------------------------------------------------------------------
# A few steps end to end on today's loop


def test_gradient_sample_is_a_seeded_per_prompt_estimate(tiny_model) -> None:
    from test_multiprocess import DigitChain  # a dense reward: an untrained model's leaves differ

    import verifiers
    from llm_rl.config import ExperimentConfig
    from llm_rl.generation import HFBackend
    from llm_rl.harness.metering import MeteredVerifier, StepContext
    from llm_rl.model import load_policy
    from relabel_rl import load_config

    cfg = load_config(ExperimentConfig, data=train_recipe(tiny_model, "tree_grpo"))
    arm = tg.TreeGrpoArm(cfg)
    policy = load_policy(tiny_model)
    verifier = MeteredVerifier(verifiers.ContainedVerifier(DigitChain()), None)
    example = dict(DigitChain().generate(1, seed=0)[0])

    def gradient(seed: int) -> torch.Tensor:
        policy.zero_grad(set_to_none=True)
        generator = torch.Generator().manual_seed(seed)
        ctx = StepContext(policy=policy, sampler=HFBackend(policy), verifier=verifier, generator=generator)
        arm.gradient_sample(example, ctx).backward()
        return torch.cat([p.grad.flatten() for p in policy.model.parameters()])

    g, again, other = gradient(0), gradient(0), gradient(1)
    assert torch.equal(g, again) and not torch.equal(g, other) and float(g.norm()) > 0


def test_llm_rl_train_arm_tree_grpo_on_the_tiny_preset(tmp_path) -> None:
    records = train_with_cli(tmp_path / "a", "tree_grpo")
    trains = [r for r in records if r["kind"] == "train"]
    assert len(trains) >= 2 and trains[-1]["generated_tokens"] >= 600 > trains[-2]["generated_tokens"]
    assert {"reward", "leaves_per_prompt", "mean_abs_advantage", "path_tokens", "grad_norm"} <= set(trains[0])
    # one outcome verifier call per leaf and no step check (outcome feedback); two prompts a step
    assert trains[-1]["outcome_verifier_calls"] == sum(
        r["leaves_per_prompt"] * r["num_prompts"] for r in trains
    )
    assert trains[-1]["step_verifier_calls"] == 0 and trains[-1]["prompts"] == 2 * len(trains)
    assert same_records(train_with_cli(tmp_path / "b", "tree_grpo"), records)


def test_several_updates_per_batch_train_on_recorded_log_probs(tmp_path) -> None:
    budget = {"axis": "optimizer_steps", "limit": 4, "eval_every": 4}
    records = train_with_cli(tmp_path, "tree_grpo", budget=budget, optim={"epochs": 2, "minibatches": 2})
    trains = [r for r in records if r["kind"] == "train"]
    assert [(r["epoch"], r["minibatch"]) for r in trains] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert trains[0]["generated_tokens"] == trains[-1]["generated_tokens"]  # one batch, four updates


def test_a_tree_the_task_cannot_hold_is_refused_before_any_work(tmp_path) -> None:
    from llm_rl.config import ExperimentConfig
    from llm_rl.experiment import validate_experiment
    from relabel_rl import load_config

    cfg = load_config(ExperimentConfig, data=train_recipe(tmp_path, "tree_grpo", tree_grpo={"depth": 4}))
    with pytest.raises(ConfigError, match=r"tree_grpo\.depth=4"):
        validate_experiment(cfg, arms=["tree_grpo"])
