"""GRPO (TRL's `GRPOTrainer`) under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo), ~15 s.

TRL distributes GRPO itself (each process generates for its share of the prompts; rewards are gathered), and
its sampling RNG is per process, so a 2-process run cannot reproduce a 1-process run sample for sample. What
must hold, and is checked here:

* the budget counters are global and exact: the generated tokens every process holds equal the sum, over both
  processes, of the completion lengths TRL handed to each process's reward function (counted independently
  through the arm's test hook), and the verifier calls equal the number of completions scored;
* both processes stop at the same step (no hang) with the same counters;
* each train/eval record is written once (by the main process), with non-decreasing counters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from test_multiprocess import WORLD, launch  # tests/ is on sys.path (pytest's default import mode)

from verifiers.tasks.chain_arithmetic import ChainArithmetic


class DigitChain(ChainArithmetic):
    """Chain-arithmetic prompts scored by the share of digits in the completion (a dense reward)."""

    name = "digit_chain_grpo"

    def score(self, completion: str, example: dict) -> float:
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))

    def check_step(self, previous_steps, step, example):
        return None


def _cfg(out: str):
    from llm_rl.config import (
        BudgetConfig,
        EvalConfig,
        ExperimentConfig,
        GrpoArmConfig,
        TaskConfig,
        WarmStartConfig,
    )

    return ExperimentConfig(
        output_dir=out,
        arm="grpo",
        task=TaskConfig(
            verifier="test_multiprocess_grpo:DigitChain",
            train_size=16,
            test_size=4,
            difficulty={"min_steps": 1, "max_steps": 2},
            max_completion_tokens=16,
        ),
        warm_start=WarmStartConfig(enabled=False),
        budget=BudgetConfig(axis="generated_tokens", limit=200, eval_every=100),
        eval=EvalConfig(num_examples=2, pass_k=2),
        grpo=GrpoArmConfig(
            trl={
                "num_generations": 2,
                "per_device_train_batch_size": 2,
                "learning_rate": 5e-2,
                "beta": 0.0,
                "loss_type": "dapo",
            }
        ),
    )


def _worker(base: str, out: str) -> None:
    import torch.distributed as dist
    from accelerate import PartialState

    import llm_rl.arms.grpo as grpo
    from relabel_rl.rundir import RunDir

    torch.set_num_threads(1)
    state = PartialState()
    seen: list[int] = []
    original = grpo._reward_function
    grpo._reward_function = lambda contained, seen_=None: original(contained, seen)  # count what TRL scores
    cfg = _cfg(out)
    run = RunDir.create(out, config=cfg, seeds={"seed": 0})
    final = grpo.train(cfg, run, init_model=base)
    gathered: list = [None] * state.num_processes
    dist.all_gather_object(gathered, {"seen": seen, "final": final})
    if state.is_main_process:
        Path(out, "worker.json").write_text(json.dumps(gathered))
    state.wait_for_everyone()


def test_grpo_two_processes_count_exactly(tmp_path):
    from llm_rl.models import build_tiny_model
    from relabel_rl.rundir import read_metrics

    base = str(build_tiny_model(tmp_path / "tiny", hidden_size=32, num_layers=2, num_heads=2))
    out = tmp_path / "run"
    proc = launch([str(Path(__file__).resolve()), "--worker", base, str(out)], timeout=600)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    ranks = json.loads((out / "worker.json").read_text())
    assert len(ranks) == WORLD
    counters = ("step", "generated_tokens", "prefill_tokens", "verifier_calls", "optimizer_steps")
    finals = [{k: r["final"][k] for k in counters} for r in ranks]
    assert finals[0] == finals[1], "the processes ended in different states"
    final = ranks[0]["final"]  # the main process's, with the evaluation
    assert "pass@1" in final
    assert final["generated_tokens"] == sum(sum(r["seen"]) for r in ranks)  # exact, over both processes
    assert final["verifier_calls"] == sum(len(r["seen"]) for r in ranks)
    assert all(len(r["seen"]) > 0 for r in ranks), "both processes generate"
    assert final["generated_tokens"] >= 200
    records = read_metrics(out / "metrics.jsonl")
    keys = [(r["kind"], r.get("step")) for r in records]
    assert len(keys) == len(set(keys)), f"a record was written twice: {keys}"
    trains = [r for r in records if r["kind"] == "train"]
    assert trains and [r["generated_tokens"] for r in trains] == sorted(r["generated_tokens"] for r in trains)
    assert trains[-1]["step"] == final["step"]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], sys.argv[3])
