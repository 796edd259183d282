"""GRPO (TRL's `GRPOTrainer`) under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo), ~25 s.

TRL distributes GRPO itself: each process generates for its share of the global batch, rewards are gathered
for the group advantages, the loss is normalised by the global token count, and DDP sums the gradients. Its
sampling RNG is per process (``set_seed(seed, device_specific=True)``), so a 2-process run cannot reproduce a
1-process run sample for sample *as shipped*. To test everything else, both runs here sample through a
stand-in for ``generate`` that draws each completion from the model's own distribution with a seed that depends
only on the prompt and on how many completions of that prompt were drawn before (what a layout-independent
sampler would do); then, with the same global batch (2 processes x 2 rows vs 1 x 4):

* every train and eval record (loss, reward, every TRL metric, every budget counter) matches one process
  (1e-5 relative; counts exact; TRL's entropy 1e-3, see below) and the final weights agree to 1e-5 — TRL's distributed update and our
  reward/counting integration are layout-independent;
* the budget counters are global and exact: the generated tokens every process holds equal the sum, over both
  processes, of the completion lengths TRL handed to each process's reward function (counted independently
  through the arm's test hook), and the verifier calls equal the number of completions scored;
* both processes stop at the same step (no hang), and each record is written once (by the main process);
* process supervision (``task.feedback: steps``) with ONE group of 4 completions split over the two processes
  (2 rows each): the step rewards are gathered, normalised over the whole group and handed back per process, so
  the records (``rejected_step_fraction`` and ``step_verifier_calls`` included) and weights match one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _procs import WORLD, launch  # tests/ is on sys.path (pytest's default import mode)

from verifiers.tasks.chain_arithmetic import ChainArithmetic


class DigitChain(ChainArithmetic):
    """Chain-arithmetic prompts scored by the share of digits in the completion (a dense reward)."""

    name = "digit_chain_grpo"

    def score(self, completion: str, example: dict) -> float:
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))

    def check_step(self, previous_steps, step, example):
        return None


class DigitSteps(DigitChain):
    """DigitChain whose steps are checked: a step is accepted when it holds a digit (a verdict an untrained model
    gets both ways, so process advantages are not all zero)."""

    name = "digit_steps_grpo"

    def check_step(self, previous_steps, step, example):
        return any(ch.isdigit() for ch in step)


def _cfg(out: str, per_device: int = 2, steps: bool = False):
    from llm_rl.arms.grpo import GrpoArmConfig
    from llm_rl.config import BudgetConfig, EvalConfig, ExperimentConfig, TaskConfig, WarmStartConfig

    return ExperimentConfig(
        output_dir=out,
        arm="grpo",
        task=TaskConfig(
            verifier=f"test_multiprocess_grpo:{'DigitSteps' if steps else 'DigitChain'}",
            feedback="steps" if steps else "outcome",
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
                "num_generations": 4 if steps else 2,  # steps: one group spans both processes
                "per_device_train_batch_size": per_device,
                # SGD, not AdamW: Adam's first steps are ~lr*sign(g), which turns float-summation noise on
                # near-zero gradient entries into differences of order lr, hiding what the test compares
                "optim": "sgd",
                "learning_rate": 0.5,
                "beta": 0.0,
                "loss_type": "dapo",
            }
        ),
    )


def layout_free_generate(original, index=lambda k: k):
    """A ``generate`` that samples row by row, row seeds from (prompt tokens, draws of that prompt so far). When
    one group is split over processes, ``index`` maps this process's draw count to the draw's place in the group
    as one process would draw it."""
    drawn: dict[tuple[int, ...], int] = {}

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = ids[mask.bool()]
            key = tuple(prompt.tolist())
            k = drawn.get(key, 0)
            drawn[key] = k + 1
            torch.manual_seed(hash((key, index(k))) % (2**31))
            out = original(
                self, input_ids=prompt[None], attention_mask=torch.ones_like(prompt)[None], **kwargs
            )
            rows.append(out[0, len(prompt) :])
        width = max(len(r) for r in rows)
        pad = self.generation_config.pad_token_id
        completions = torch.full((len(rows), width), pad, dtype=input_ids.dtype)
        for i, r in enumerate(rows):
            completions[i, : len(r)] = r
        return torch.cat([input_ids, completions], dim=1)

    return generate


def _patch_generate(index=lambda k: k) -> None:
    from transformers import LlamaForCausalLM

    original = getattr(LlamaForCausalLM, "_unpatched_generate", LlamaForCausalLM.generate)
    LlamaForCausalLM._unpatched_generate = original
    LlamaForCausalLM.generate = layout_free_generate(original, index)


def _train(base: str, out: str, per_device: int, seen: list[int], steps: bool = False):
    import llm_rl.harness.trl_bridge as bridge
    from llm_rl.harness.run import train_arm
    from relabel_rl.rundir import RunDir

    original = bridge._reward_function
    bridge._reward_function = lambda verifier, seen_=None: original(verifier, seen)  # count what TRL scores
    try:
        cfg = _cfg(out, per_device, steps)
        run = RunDir.create(out, config=cfg, seeds={"seed": 0})
        final = train_arm(cfg, run, init_model=base)
    finally:
        bridge._reward_function = original
    params = {n: p.detach().clone() for n, p in load_policy_params(Path(out) / "final").items()}
    return final, params


def load_policy_params(path: Path) -> dict:
    from llm_rl.model import load_policy

    return dict(load_policy(path).named_parameters())


def _worker(base: str, out: str) -> None:
    import torch.distributed as dist
    from accelerate import PartialState

    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    _patch_generate()
    seen: list[int] = []
    final, params = _train(base, out, 2, seen)
    if state.is_main_process:
        torch.save(params, Path(out) / "params.pt")
    # process r holds rows 2r, 2r+1 of each group of 4: its c-th draw of a prompt is draw 4(c//2) + 2r + c%2
    rank = state.process_index
    _patch_generate(lambda c: 4 * (c // 2) + 2 * rank + c % 2)
    _, steps_params = _train(base, out + "_steps", 2, [], steps=True)
    if state.is_main_process:
        torch.save(steps_params, Path(out + "_steps") / "params.pt")
    gathered: list = [None] * state.num_processes
    dist.all_gather_object(gathered, {"seen": seen, "final": final})
    if state.is_main_process:
        Path(out, "worker.json").write_text(json.dumps(gathered))
    state.wait_for_everyone()


TIMING_KEYS = {"wall_time", "grad_norm", "gen_tokens_per_s", "expand_tokens_per_s", "step_time"}


def test_grpo_two_processes_match_one_and_count_exactly(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from llm_rl.model import build_tiny_model
    from relabel_rl.rundir import read_metrics

    base = str(build_tiny_model(tmp_path / "tiny", hidden_size=32, num_layers=2, num_heads=2))
    out = tmp_path / "run"
    proc = launch([str(Path(__file__).resolve()), "--worker", base, str(out)])
    torch.set_num_threads(1)  # the reference, one process with the same global batch, while the launch runs
    original = LlamaForCausalLM.generate
    monkeypatch.setattr(LlamaForCausalLM, "generate", layout_free_generate(original))
    ref_final, ref_params = _train(base, str(tmp_path / "one"), 4, [])
    monkeypatch.setattr(LlamaForCausalLM, "generate", layout_free_generate(original))  # fresh draw counts
    _, ref_steps_params = _train(base, str(tmp_path / "one_steps"), 4, [], steps=True)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    ranks = json.loads((out / "worker.json").read_text())
    assert len(ranks) == WORLD
    counters = ("step", "generated_tokens", "prefill_tokens", "verifier_calls", "prompts", "optimizer_steps")
    finals = [{k: r["final"][k] for k in counters} for r in ranks]
    assert finals[0] == finals[1], "the processes ended in different states"
    assert finals[0] == {k: ref_final[k] for k in counters}, "2 processes spent what 1 process spent"
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
    # Against one process: the same records and final weights.
    want = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if r["kind"] in ("train", "eval")]
    got = [r for r in records if r["kind"] in ("train", "eval")]
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), g.keys() ^ w.keys()
        for k, v in w.items():
            if k in TIMING_KEYS:
                continue
            if isinstance(v, float):
                # TRL logs entropy as the mean over processes of each process's token mean: a weighting that
                # shifts it (not the loss) when the processes hold different numbers of tokens
                rel = 1e-3 if k == "entropy" else 1e-5
                assert g[k] == pytest.approx(v, rel=rel, abs=1e-6), (w["kind"], w["step"], k)
            else:
                assert g[k] == v, (w["kind"], w["step"], k, g[k], v)
    params = torch.load(out / "params.pt")
    for n, p in ref_params.items():
        assert torch.allclose(params[n], p, atol=1e-5, rtol=0), n
    assert any(r["loss"] != 0.0 for r in trains)  # the comparison is not of a run that learnt nothing
    _assert_same_run(tmp_path / "run_steps", tmp_path / "one_steps", ref_steps_params)
    steps = [r for r in read_metrics(tmp_path / "run_steps" / "metrics.jsonl") if r["kind"] == "train"]
    assert all(r["step_verifier_calls"] > 0 and "rejected_step_fraction" in r for r in steps)
    assert any(0.0 < r["rejected_step_fraction"] < 1.0 and r["loss"] != 0.0 for r in steps)  # it learnt


def _assert_same_run(got_dir: Path, want_dir: Path, want_params: dict) -> None:
    """Records (timing aside) and final weights of a 2-process run equal those of the 1-process reference."""
    from relabel_rl.rundir import read_metrics

    got, want = (
        [r for r in read_metrics(d / "metrics.jsonl") if r["kind"] in ("train", "eval")]
        for d in (got_dir, want_dir)
    )
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), g.keys() ^ w.keys()
        for k, v in w.items():
            if k in TIMING_KEYS:
                continue
            if isinstance(v, float):
                rel = 1e-3 if k == "entropy" else 1e-5
                assert g[k] == pytest.approx(v, rel=rel, abs=1e-6), (w["kind"], w["step"], k)
            else:
                assert g[k] == v, (w["kind"], w["step"], k, g[k], v)
    params = torch.load(got_dir / "params.pt")
    for n, p in want_params.items():
        assert torch.allclose(params[n], p, atol=1e-5, rtol=0), n


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], sys.argv[3])
