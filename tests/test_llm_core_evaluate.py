"""evaluate(): pass@1 / pass@k / mean_score arithmetic on a scripted backend, and a real tiny-policy run."""

from __future__ import annotations

import pytest
import torch

import verifiers
from llm_rl.generation import Continuation, HFBackend
from llm_rl.harness.budget import Budget
from llm_rl.harness.evaluation import evaluate, pass_at_k
from llm_rl.model import build_tiny_model, load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _c(text: str) -> Continuation:
    return Continuation(
        text=text, token_ids=(1,) * max(1, len(text)), logprob=0.0, finished=True, stopped=False
    )


class ScriptedBackend:
    """Greedy: gold for even rows. Samples: row i gets i (mod k+1) gold answers among k."""

    def __init__(self, rows, k):
        self.gold = {r["prompt"]: r["solution"] for r in rows}
        self.order = [r["prompt"] for r in rows]
        self.k = k
        self.budget = Budget()

    def greedy(self, prefixes, *, max_new_tokens, stop=None):
        return [_c(self.gold[p] if self.order.index(p) % 2 == 0 else "Answer: -1") for p in prefixes]

    def sample(self, prefixes, *, n, max_new_tokens, temperature=1.0, stop="\n", generator=None):
        out = []
        for p in prefixes:
            good = self.order.index(p) % (self.k + 1)
            out.append([_c(self.gold[p]) if j < good else _c("no answer") for j in range(n)])
        return out


def test_pass_at_k_estimator():
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_metrics_on_a_scripted_backend():
    verifier = verifiers.load("chain_arithmetic")
    rows = list(verifier.generate(6, seed=0, split="test"))
    backend = ScriptedBackend(rows, k=2)
    m = evaluate(backend, verifier, rows, k=2, batch_size=4, progress=False, return_completions=True)
    # greedy: rows 0, 2, 4 right
    assert m["pass@1"] == pytest.approx(3 / 6) and m["n"] == 6 and m["k"] == 2
    # samples: good counts per row = i % 3 = 0,1,2,0,1,2 of 2 -> 4 rows with a success, 6 successes of 12
    assert m["pass@k"] == pytest.approx(4 / 6)
    assert m["mean_score"] == pytest.approx(6 / 12) and m["sample_pass@1"] == pytest.approx(6 / 12)
    assert m["completions"][0]["greedy_score"] == 1.0 and m["completions"][1]["greedy_score"] == 0.0
    assert backend.budget.generated_tokens == 0  # evaluation is never charged
    greedy_only = evaluate(backend, verifier, rows, k=0, num_examples=4, progress=False)
    assert greedy_only["pass@k"] is None and greedy_only["n"] == 4 and greedy_only["pass@1"] == 0.5


def test_a_broken_verifier_scores_zero_and_is_counted():
    class Broken(verifiers.Verifier):
        name = "broken"
        trusted = True

        def score(self, completion, example):
            raise RuntimeError("boom")

    rows = list(verifiers.load("chain_arithmetic").generate(3, seed=0))
    m = evaluate(ScriptedBackend(rows, k=1), Broken(), rows, k=1, progress=False)
    assert m["pass@1"] == 0.0 and m["mean_score"] == 0.0
    assert sum(m["verifier_failures"].values()) >= 6


def test_real_policy_is_deterministic_and_uncounted(tmp_path):
    path = build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    policy = load_policy(path)
    verifier = verifiers.load("chain_arithmetic")
    rows = verifier.generate(4, seed=1, split="test")
    budget = Budget()
    backend = HFBackend(policy, budget)
    a = evaluate(backend, verifier, rows, k=2, max_new_tokens=24, progress=False)
    b = evaluate(policy, verifier, rows, k=2, max_new_tokens=24, progress=False)
    assert a == b
    assert budget.generated_tokens == 0 and budget.prefill_tokens == 0 and backend.budget is budget
    assert set(a) >= {"pass@1", "pass@k", "k", "mean_score", "n"}
