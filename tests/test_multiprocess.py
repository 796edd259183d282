"""Multi-process correctness on CPU: ``accelerate launch --multi_gpu --num_processes 2`` (gloo) reproduces one
process with the same global batch.

One launch (process start-up dominates: ~20 s on 2 shared cores) runs every check in ``_worker`` below; the
single-process references are computed in the pytest process while the launch runs. Checked:

* **the hand-written arms end to end** (relabel, mc_value, tree_grpo, rft, and relabel with LoRA, through the harness,
  `llm_rl.harness.run.train_arm`): two optimizer steps of a global batch of 4 prompts in ``optim.prompt_chunks: 2`` seeded
  chunks — one chunk per process vs both in one process. Every train/eval record (loss, every arm metric, every budget counter)
  matches; the final parameters agree to 1e-5 (float32 summation order differs: per-process partial gradients
  are summed by the all-reduce). Only the main process writes records: each appears once.
* **budget counters**: generated tokens, prefill tokens and verifier calls in every record are *exactly* the
  single-process totals (summed over processes by `llm_rl.harness.distributed.BudgetSync`), and so are the
  verifier call statistics.
* **a step in isolation** (the loop's own collect-and-update of a chunked batch, with the MC-value arm on a toy
  verifier, no evaluation or checkpoints), so a failure points at the step or at the rest of the loop.
Go (`go-baseline train` itself, both arms, and a killed 2-process run resumed) is in ``test_multiprocess_go.py``.
GRPO under 2 processes (TRL distributes it) is in ``test_multiprocess_grpo.py``.

Tolerance: 1e-5 (absolute on parameters after two AdamW/SGD steps, relative on losses and metrics); sampled
tokens and budget counts must be identical. Timing metrics (wall time, tokens/s, grad norm) are not compared.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _procs import (
    REPO,
    WORLD,
    assert_same_records,
    launch,
)  # tests/ is on sys.path (pytest's default import mode)

from verifiers.base import Verifier
from verifiers.tasks.chain_arithmetic import ChainArithmetic

PROMPTS_PER_STEP = 4
CHUNKS = 2
STEPS = 2
TOL = 1e-5


# ---------------------------------------------------------------------------------------------------------------
# The computations, shared by the worker (2 processes) and the reference (1 process)


class ToyVerifier(Verifier):
    """Scores 1 when a completion contains a "9": a random tiny model earns it about half the time, so
    advantages are non-zero and the MC-value loss has a gradient. Steps are "|"-separated (frequent too)."""

    name = "toy_nine"
    step_delimiter = "|"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        return float("9" in completion)

    def split_steps(self, completion: str) -> list[str]:
        return [s for s in completion.split(self.step_delimiter) if s]

    def check_step(self, previous_steps, step, example):
        return None

    def is_terminal_step(self, step: str) -> bool:
        return step.startswith("Answer:")


class DigitChain(ChainArithmetic):
    """Chain-arithmetic prompts scored by the share of digits in the completion: a dense reward an untrained
    tiny model already varies on, so the arms have a gradient from the first step (no warm start needed)."""

    name = "digit_chain"

    def score(self, completion: str, example: dict) -> float:
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))

    def check_step(self, previous_steps, step, example):
        return None


ARMS = (
    "relabel",
    "mc_value",
    "tree_grpo",
    "rft",
    "relabel+lora",
)  # "+lora": with a PEFT LoRA adapter (adapter + value head train)
TIMING_KEYS = {"wall_time", "grad_norm", "expand_tokens_per_s", "gen_tokens_per_s"}


def _train_cfg(arm: str, out: str, *, lora: bool = False):
    from llm_rl.arms.mc_value import McValueArmConfig
    from llm_rl.arms.relabel import RelabelArmConfig
    from llm_rl.arms.rft import RftArmConfig
    from llm_rl.config import (
        BudgetConfig,
        EvalConfig,
        ExperimentConfig,
        LoraSettings,
        ModelConfig,
        OptimConfig,
        TaskConfig,
        WarmStartConfig,
    )
    from tree_search import PuctConfig

    return ExperimentConfig(
        output_dir=out,
        arm=arm,
        model=ModelConfig(lora=LoraSettings(enabled=lora, r=4, alpha=8)),
        task=TaskConfig(
            verifier="test_multiprocess:DigitChain",
            train_size=16,
            test_size=4,
            difficulty={"min_steps": 1, "max_steps": 2},
            max_steps=3,
            max_step_tokens=8,
            max_completion_tokens=24,
        ),
        warm_start=WarmStartConfig(enabled=False),
        # optimizer steps: no arm stops mid-batch on this axis, so both runs take the same two full steps
        budget=BudgetConfig(axis="optimizer_steps", limit=STEPS, eval_every=STEPS),
        eval=EvalConfig(num_examples=2, pass_k=2),
        optim=OptimConfig(
            learning_rate=5e-2, prompts_per_step=PROMPTS_PER_STEP, prompt_chunks=CHUNKS, checkpoint_every=100
        ),
        relabel=RelabelArmConfig(
            puct=PuctConfig(num_simulations=2, dirichlet_fraction=0.25), num_candidates=2
        ),
        mc_value=McValueArmConfig(num_samples=2, num_rollouts=1),
        rft=RftArmConfig(num_samples=2, threshold=0.1),  # a tenth of digits: some samples are kept
    )


def train_arm(arm: str, base: str, out: str, *, lora: bool = False) -> dict:
    """The arm trained by the harness; returns its records and final weights."""
    from llm_rl.harness.distributed import barrier
    from llm_rl.harness.run import train_arm
    from llm_rl.model import load_policy
    from relabel_rl.rundir import RunDir, read_metrics

    arm, _, variant = arm.partition("+")
    cfg = _train_cfg(arm, out, lora=lora or variant == "lora")
    run = RunDir.create(out, config=cfg, seeds={"seed": 0})
    torch.manual_seed(0)
    train_arm(cfg, run, init_model=base)
    barrier()
    final = load_policy(Path(out) / "final")
    params = {n: p.detach().clone() for n, p in final.named_parameters()}
    return {"records": read_metrics(Path(out) / "metrics.jsonl"), "params": params}


def _policy(path: str):
    from llm_rl.model import load_policy

    torch.manual_seed(0)
    pol = load_policy(path)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # varied outputs (a fresh tiny LM repeats one token)
        for p in pol.model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return pol


def _examples() -> list[dict]:
    return [
        {"prompt": f"Start {i}. Add {i + 2}.\n", "answer": str(2 * i + 2)} for i in range(PROMPTS_PER_STEP)
    ]


def run_arm(arm: str, path: str, out: str) -> dict:
    """``STEPS`` global optimizer steps of ``arm`` (the loop's collect + update on this process's chunks, on the
    toy verifier); returns per step the loss, metrics and budget counters this process holds, and the params."""
    from llm_rl.arms.mc_value import McValueArm, McValueArmConfig
    from llm_rl.config import BudgetConfig, ExperimentConfig, OptimConfig, TaskConfig
    from llm_rl.harness.data import TaskData
    from llm_rl.harness.distributed import barrier, is_main
    from llm_rl.harness.loop import _Loop
    from llm_rl.harness.session import Session
    from relabel_rl.rundir import RunDir
    from verifiers import ContainedVerifier

    assert arm == "mc_value"
    cfg = ExperimentConfig(
        task=TaskConfig(max_steps=3, max_completion_tokens=8),
        budget=BudgetConfig(axis="optimizer_steps", limit=STEPS, eval_every=STEPS),
        optim=OptimConfig(learning_rate=1e-2, prompts_per_step=PROMPTS_PER_STEP, prompt_chunks=CHUNKS),
        mc_value=McValueArmConfig(num_samples=2, num_rollouts=2),
    )
    if is_main():
        RunDir.create(out, config=cfg)
    barrier()
    task = TaskData(ContainedVerifier(ToyVerifier()), train=_examples(), test=_examples()[:1])
    session = Session(cfg, RunDir(Path(out)), task=task, progress=False)
    loop = _Loop.build(McValueArm(cfg), session, _policy(path))
    records = []
    for _ in range(STEPS):
        examples = [task.train[i] for i in loop.cursor.next(PROMPTS_PER_STEP)]
        values = loop._update([batch for _, batch in loop._collect(examples)])
        budget = session.budget
        counters = {
            k: getattr(budget, k) for k in ("generated_tokens", "prefill_tokens", "verifier_calls", "prompts")
        }
        metrics = {k: v for k, v in values.items() if k not in ("loss", "grad_norm")}
        assert values["grad_norm"] > 0, "the toy task must give the arm something to learn"
        records.append(
            {
                "loss": values["loss"],
                "metrics": metrics,
                **counters,
                "optimizer_steps": budget.optimizer_steps,
            }
        )
    state = {n: p.detach().clone() for n, p in loop.policy.named_parameters()}
    return {"records": records, "params": state}


# ---------------------------------------------------------------------------------------------------------------
# The worker (run under accelerate launch)


def _worker(path: str, out_dir: str) -> None:
    from accelerate import Accelerator

    from llm_rl.harness.distributed import Layout

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    layout = Layout.current()
    assert layout.world == WORLD and torch.distributed.get_backend() == "gloo", (layout, accelerator.state)

    result = {"step": run_arm("mc_value", path, str(Path(out_dir) / "step"))}
    for arm in ARMS:  # every process writes the same run directory (only the main process writes files)
        result[arm] = train_arm(arm, path, str(Path(out_dir) / arm))
    torch.save(result, Path(out_dir) / f"rank{layout.rank}.pt")
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------------------------
# The test


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    from llm_rl.model import build_tiny_model

    return str(
        build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=2, num_heads=2)
    )


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=TOL, rtol=0), (n, (a[n] - b[n]).abs().max().item())


def test_two_processes_match_one(tiny_path, tmp_path):
    start = time.perf_counter()
    proc = launch([str(Path(__file__).resolve()), "--worker", tiny_path, str(tmp_path / "two")])
    torch.set_num_threads(1)
    ref_step = run_arm("mc_value", tiny_path, str(tmp_path / "one" / "step"))
    ref_arms = {arm: train_arm(arm, tiny_path, str(tmp_path / "one" / arm)) for arm in ARMS}
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, output[-4000:]
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for res in ranks:
        # The arms end to end: the very same records (written once, by the main process) and final weights.
        for arm in ARMS:
            assert_same_records(
                res[arm]["records"],
                ref_arms[arm]["records"],
                skip=TIMING_KEYS | {"verifier_failures"},
                tol=TOL,
            )
            _close(res[arm]["params"], ref_arms[arm]["params"])
        # The step alone: same losses, metrics, exact global counters, same parameters.
        for got, want in zip(res["step"]["records"], ref_step["records"]):
            assert got["loss"] == pytest.approx(want["loss"], rel=TOL, abs=1e-7)
            assert got["metrics"].keys() == want["metrics"].keys()
            for k in want["metrics"]:
                assert got["metrics"][k] == pytest.approx(want["metrics"][k], rel=TOL, abs=1e-7), k
            for k in ("generated_tokens", "prefill_tokens", "verifier_calls", "prompts", "optimizer_steps"):
                assert got[k] == want[k], (k, got[k], want[k])
        _close(res["step"]["params"], ref_step["params"])
    for arm in ARMS:  # something was spent and learnt, so the comparison is not vacuous
        last = ref_arms[arm]["records"][-1]
        assert last["kind"] == "verifier" and last["calls"] > 0
        trains = [r for r in ref_arms[arm]["records"] if r["kind"] == "train"]
        assert len(trains) == STEPS and trains[-1]["generated_tokens"] > 0
    print(f"2-process check took {time.perf_counter() - start:.1f}s")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    sys.path.insert(0, str(REPO))
    _worker(sys.argv[2], sys.argv[3])
