"""HFBackend: shared prefill, exact budget counts, stops, determinism, agreement with `model.generate`."""

from __future__ import annotations

import pytest
import torch

from llm_rl.generation import Continuation, HFBackend, make_backend
from llm_rl.harness.budget import Budget
from llm_rl.model import build_tiny_model, load_policy

PREFIXES = ["Start 3. Add 4.\n", "ab", "Start 12. Add 5, times 3.\n3 + 4 = 7\n"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=2, num_heads=2)
    torch.manual_seed(0)
    pol = load_policy(path)
    # A freshly initialised LM repeats one token; larger weights give varied greedy outputs to compare.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pol.model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return pol


def _distinct_prefill(policy, prefixes):
    return sum(len(ids) for ids in policy.encode(list(dict.fromkeys(prefixes))))


def test_greedy_shared_prefill_matches_unshared_generate(policy):
    budget = Budget()
    backend = HFBackend(policy, budget)
    prefixes = [*PREFIXES, PREFIXES[0]]  # a duplicate prefix is prefilled once too
    out = backend.sample(prefixes, n=3, max_new_tokens=12, temperature=0.0, stop=None)
    assert budget.prefill_tokens == _distinct_prefill(policy, prefixes)
    assert budget.generated_tokens == sum(c.num_tokens for group in out for c in group)
    for prefix, group in zip(prefixes, out):
        assert len(group) == 3
        ids = torch.tensor([policy.encode([prefix])[0]])
        ref = policy.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, eos_token_id=None
        )[0, ids.shape[1] :].tolist()
        for c in group:
            assert list(c.token_ids) == ref
    texts = {c.text for group in out for c in group}
    assert len(texts) > 1, "degenerate model: the comparison would be vacuous"


def test_budget_counts_exactly_what_was_sampled(policy):
    budget = Budget()
    backend = HFBackend(policy, budget)
    g = torch.Generator().manual_seed(0)
    out = backend.sample(PREFIXES, n=4, max_new_tokens=10, temperature=1.0, stop="\n", generator=g)
    assert budget.generated_tokens == sum(len(c.token_ids) for group in out for c in group)
    assert budget.prefill_tokens == _distinct_prefill(policy, PREFIXES)
    nl = policy.tokenizer.convert_tokens_to_ids("\n")
    for group in out:
        for c in group:
            assert 1 <= c.num_tokens <= 10
            if c.stopped:
                assert c.token_ids[-1] == nl and nl not in c.token_ids[:-1] and "\n" not in c.text
            elif c.finished:
                assert c.token_ids[-1] == policy.eos_token_id
            else:
                assert c.num_tokens == 10 and c.truncated
    # the recorded log-prob is the policy's log-prob of the sampled tokens
    flat = [(p, c) for p, group in zip(PREFIXES, out) for c in group]
    scored = policy.sequence_logprobs([p for p, _ in flat], [c.token_ids for _, c in flat])
    assert torch.allclose(scored, torch.tensor([c.logprob for _, c in flat]), atol=1e-4)
    # evaluation backends count nothing
    HFBackend(policy, None).sample(PREFIXES, n=2, max_new_tokens=5)


def test_sampling_is_deterministic_for_a_seed(policy):
    backend = HFBackend(policy)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return backend.sample(PREFIXES, n=4, max_new_tokens=8, temperature=1.0, stop="\n", generator=g)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stop_on_token_id_and_on_text(policy):
    backend = HFBackend(policy)
    (free,) = backend.greedy([PREFIXES[0]], max_new_tokens=12)
    assert isinstance(free, Continuation) and len(free.text) >= 6
    ch = free.text[3]
    (one,) = backend.greedy([PREFIXES[0]], max_new_tokens=12, stop=ch)
    cut = free.text.index(ch)
    assert one.stopped and one.text == free.text[:cut] and one.num_tokens == cut + 1
    assert backend.stop_token_ids(ch) is not None
    two_chars = free.text[4:6]
    assert backend.stop_token_ids(two_chars) is None  # no single char token holds two chars: text fallback
    (two,) = backend.greedy([PREFIXES[0]], max_new_tokens=12, stop=two_chars)
    cut = free.text.index(two_chars)
    assert two.stopped and two.text == free.text[:cut] and two.num_tokens == cut + 2


def test_eos_finishes_a_row_and_compaction_changes_nothing(policy):
    backend = HFBackend(policy)
    reference = backend.sample(PREFIXES, n=2, max_new_tokens=12, temperature=0.0, stop=None)
    # Make the 3rd greedy token of the first prefix the EOS token: that row must finish right there.
    eos_char = reference[0][0].text[2]
    original = policy.tokenizer.eos_token
    policy.tokenizer.eos_token = eos_char
    try:
        out_full = HFBackend(policy, compact_below=0.0).sample(
            PREFIXES, n=2, max_new_tokens=12, temperature=0.0
        )
        out_compact = HFBackend(policy, compact_below=1.0).sample(
            PREFIXES, n=2, max_new_tokens=12, temperature=0.0
        )
    finally:
        policy.tokenizer.eos_token = original
    first = out_full[0][0]
    cut = reference[0][0].text.index(eos_char)
    assert first.finished and not first.stopped and first.text == reference[0][0].text[:cut]
    assert first.num_tokens == cut + 1
    for a, b in zip(out_full, out_compact):  # batch shape changes floats in the last bits only
        assert [(c.token_ids, c.finished, c.stopped) for c in a] == [
            (c.token_ids, c.finished, c.stopped) for c in b
        ]
        assert [c.logprob for c in a] == pytest.approx([c.logprob for c in b], abs=1e-4)


def test_context_length_truncates_with_a_warning(policy):
    backend = HFBackend(policy, Budget())
    long_prefix = "1" * (policy.max_positions - 5)  # + BOS = max_positions - 4 tokens
    with pytest.warns(UserWarning, match="context length"):
        (c,) = backend.greedy([long_prefix], max_new_tokens=20)
    assert c.num_tokens <= 4 and backend.budget.generated_tokens == c.num_tokens
    with pytest.raises(ValueError, match="no room"):
        backend.greedy(["1" * policy.max_positions], max_new_tokens=1)


def test_bad_arguments_and_backend_factory(policy):
    backend = make_backend("hf", policy, None)
    assert isinstance(backend, HFBackend)
    with pytest.raises(ValueError, match="n must be"):
        backend.sample(["a"], n=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        backend.sample(["a"], n=1, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_backend("tgi", policy, None)
    assert backend.sample([], n=2, max_new_tokens=3) == []


def test_a_peft_policy_samples_through_the_same_path(policy):
    import copy

    from llm_rl.config import LoraSettings

    # with_lora injects the adapter into the LM in place: work on a copy, the fixture is shared
    peft_policy = copy.deepcopy(policy).with_lora(LoraSettings(enabled=True, r=2, alpha=4))
    budget = Budget()
    out = HFBackend(peft_policy, budget).sample(
        PREFIXES[:2], n=2, max_new_tokens=6, temperature=0.0, stop=None
    )
    plain = HFBackend(policy).sample(PREFIXES[:2], n=2, max_new_tokens=6, temperature=0.0, stop=None)
    # a fresh LoRA adapter is the identity (B = 0): the same greedy tokens as the base model
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in plain]
    assert budget.prefill_tokens == _distinct_prefill(policy, PREFIXES[:2])
    assert budget.generated_tokens == sum(c.num_tokens for g in out for c in g)
