"""The harness's loop: budget stop, eval schedule, determinism, exact token accounting, kill-and-resume."""

from __future__ import annotations

import pytest

from llm_rl.arms import Arm, Batch
from llm_rl.config import ExperimentConfig
from llm_rl.harness.data import PromptCursor, load_task
from llm_rl.harness.run import train_arm
from llm_rl.model import build_tiny_model
from relabel_rl import RunDir, load_config

RECIPE = {
    "seed": 3,
    "task": {"train_size": 12, "test_size": 4, "max_completion_tokens": 16, "max_step_tokens": 8},
    "budget": {"axis": "optimizer_steps", "limit": 5, "eval_every": 2},
    "eval": {"num_examples": 3, "pass_k": 2},
    "optim": {"learning_rate": 0.01, "prompts_per_step": 2, "checkpoint_every": 2},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=1, num_heads=2)


@pytest.fixture(scope="module")
def task():
    return load_task(load_config(ExperimentConfig, data=RECIPE))


class SftArm(Arm):
    """A toy arm: sample two steps per prompt and score each prompt's gold solution (both metered), then SFT on
    the gold solution + value regression. ``sampled`` counts what it sampled; ``kill_at_call`` dies there."""

    name = "toy_sft"
    kill_at_call: int | None = None

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.sampled = {"tokens": 0, "calls": 0}

    def collect(self, examples, ctx):
        self.sampled["calls"] += 1
        if self.kill_at_call is not None and self.sampled["calls"] == self.kill_at_call:
            raise Killed
        out = ctx.sampler.sample(
            [e["prompt"] for e in examples], n=2, max_new_tokens=8, generator=ctx.generator
        )
        self.sampled["tokens"] += sum(c.num_tokens for group in out for c in group)
        for e in examples:
            ctx.verifier.score(e["solution"], e)
        return Batch(list(examples))

    def loss(self, batch, policy):
        examples = batch.items
        tl = policy.token_logprobs(
            [e["prompt"] for e in examples], [e["solution"] for e in examples], with_values=True
        )
        nll = -(tl.sums() / tl.mask.sum(-1)).mean()
        value = ((tl.values - 1.0) ** 2).mean()
        return nll + value, {"nll": float(nll.detach())}


def _train(base, task, path, *, kill_at_call=None, overrides=()):
    cfg = load_config(ExperimentConfig, data=RECIPE, overrides=list(overrides))
    run = RunDir.create(path, config=cfg)
    arm = SftArm(cfg)
    arm.kill_at_call = kill_at_call
    final = train_arm(cfg, run, init_model=str(base), arm=arm, task=task, progress=False)
    return final, run, arm.sampled


def _strip(records):
    return [
        {k: v for k, v in r.items() if k != "wall_time"} for r in records if r["kind"] in ("train", "eval")
    ]


def test_trains_to_budget_with_exact_counts_and_eval_schedule(base, task, tmp_path):
    final, run, sampled = _train(base, task, tmp_path / "run")
    records = run.metrics()
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in evals] == [0, 2, 4, 5]  # start, each eval_every crossing, the end
    assert final["optimizer_steps"] == 5 and final["verifier_calls"] == 10
    assert (
        final["generated_tokens"] == sampled["tokens"] and train[-1]["generated_tokens"] == sampled["tokens"]
    )
    assert final["prompts"] == 5 * 2 and [r["prompts"] for r in train] == [2, 4, 6, 8, 10]
    assert evals[0]["generated_tokens"] == 0
    assert final["step"] == 5 and set(final) >= {"pass@1", "pass@k", "k", "mean_score", "generated_tokens"}
    assert train[-1]["nll"] < train[0]["nll"]  # it learns
    assert (run.path / "final" / "value_head.json").exists()
    assert (run.checkpoint_dir / "checkpoint-5" / "harness_state.json").exists()
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "checkpoint-4",
        "checkpoint-5",
    ]  # newest two
    assert any(r["kind"] == "verifier" for r in records)


def test_same_seed_same_metrics_and_resume_after_a_kill(base, task, tmp_path):
    final_a, run_a, _ = _train(base, task, tmp_path / "a")
    _, run_b, _ = _train(base, task, tmp_path / "b")
    assert _strip(run_a.metrics()) == _strip(run_b.metrics())

    with pytest.raises(Killed):  # killed in step 4, after the checkpoint at step 2 (and step 3's records)
        _train(base, task, tmp_path / "c", kill_at_call=4)
    assert max(r["step"] for r in RunDir(tmp_path / "c").metrics()) == 3
    final_c, run_c, _ = _train(base, task, tmp_path / "c")
    assert _strip(run_c.metrics()) == _strip(run_a.metrics())
    assert [r["step"] for r in run_c.metrics() if r["kind"] == "resume"] == [2]
    assert final_c["generated_tokens"] == final_a["generated_tokens"]
    assert final_c["wall_time"] > 0
    # a finished run resumes to the same answer without training or evaluating again
    again, _, sampled = _train(base, task, tmp_path / "c")
    assert sampled["calls"] == 0
    assert {k: v for k, v in again.items() if k != "wall_time"} == {
        k: v for k, v in final_c.items() if k != "wall_time"
    }


def test_prompt_cursor_epochs_and_state():
    c = PromptCursor(5, seed=1)
    first = c.next(3) + c.next(3)
    assert sorted(first[:5]) == list(range(5))
    state = c.state_dict()
    assert state == {"epoch": 1, "position": 1}
    rest = c.next(4)
    d = PromptCursor(5, seed=1)
    d.load_state_dict(state)
    assert d.next(4) == rest


def test_verifier_stats_survive_a_resume(base, tmp_path):
    """The eval/verifier records count the run's verifier calls, not the session's, across a kill and resume."""
    cfg = load_config(ExperimentConfig, data=RECIPE)

    def train(path, kill_at_call=None):
        task = load_task(cfg)  # a fresh verifier (and stats) per session, as in a new process
        run = RunDir.create(path, config=cfg)
        arm = SftArm(cfg)
        arm.kill_at_call = kill_at_call
        train_arm(cfg, run, init_model=str(base), arm=arm, task=task, progress=False)
        return [r for r in run.metrics() if r["kind"] == "verifier"][-1]

    uninterrupted = train(tmp_path / "a")
    with pytest.raises(Killed):
        train(tmp_path / "c", kill_at_call=4)
    resumed = train(tmp_path / "c")
    assert uninterrupted["calls"] == 5 * cfg.optim.prompts_per_step
    assert resumed == uninterrupted
