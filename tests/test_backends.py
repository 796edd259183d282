"""The generation-backend interface: the HF backend and the vLLM backend honour the same contract.

vLLM needs a CUDA GPU and is an optional extra, so it is not installed here. Its backend is tested against a
*fake* ``vllm`` module whose ``LLM`` really generates, token by token, with the HF model loaded from the
directory the backend exported — so these tests check everything the backend does around the engine (export,
request building, seeding, flags, text, exact budget counts, weight sync with and without LoRA) against the HF
backend on the same model. What they cannot check is vLLM itself; see docs/scaling.md.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from llm_rl.config import LoraSettings
from llm_rl.generation import Continuation, HFBackend, make_backend
from llm_rl.harness.budget import Budget
from llm_rl.model import build_tiny_model, load_policy

# The perturbed tiny model rarely writes "\n"; "|" is frequent, so rows stop on it often.
STOP = "|"
PREFIXES = ["Start 3. Add 4.\n", "Start 12. Add 5, times 3.\n3 + 4 = 7\n", "Start 3. Add 4.\n"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturbed_policy(path, *, lora: bool = False):
    torch.manual_seed(0)
    pol = load_policy(path, lora=LoraSettings(enabled=True, r=4) if lora else None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a fresh tiny LM repeats one token; larger weights give varied outputs
        for p in pol.model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
        # EOS as likely as the frequent "9", so that rows end by EOS, by the stop string and by length alike.
        head = pol.model.get_output_embeddings().weight
        head[pol.eos_token_id] = head[pol.tokenizer.convert_tokens_to_ids("9")]
    return pol


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, num_layers=2, num_heads=2)


@pytest.fixture(scope="module")
def policy(tiny_path):
    return _perturbed_policy(tiny_path)


# ---------------------------------------------------------------------------------------------------------------
# A fake `vllm` with the API surface the backend uses, generating with the exported HF model.


@dataclass
class _Out:
    token_ids: list[int]
    text: str
    cumulative_logprob: float
    finish_reason: str
    stop_reason: str | int | None
    logprobs: list | None = None


@dataclass
class _RequestOut:
    outputs: list[_Out]


class _SamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _FakeLLM:
    instances: ClassVar[list[_FakeLLM]] = []

    def __init__(self, *, model, tokenizer, enable_prefix_caching, **kw):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert enable_prefix_caching is True
        assert kw["distributed_executor_backend"] == "external_launcher"  # the engine lives in this process
        assert (
            os.environ["WORLD_SIZE"] == "1"
            and os.environ["RANK"] == "0"
            and int(os.environ["MASTER_PORT"]) > 0
        )
        self.kwargs = kw
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.loaded: list[str] = []
        self.cache_resets = 0
        runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=self._load_weights))
        self.llm_engine = types.SimpleNamespace(
            model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(model_runner=runner))
        )
        _FakeLLM.instances.append(self)

    def _load_weights(self, pairs):
        state = dict(self.model.named_parameters())
        for name, tensor in pairs:
            assert name in state, f"vLLM has no weight named {name!r}"
            with torch.no_grad():
                state[name].copy_(tensor)
            self.loaded.append(name)

    def reset_prefix_cache(self):
        self.cache_resets += 1

    @torch.no_grad()
    def generate(self, requests, params, use_tqdm=False):
        eos = self.tokenizer.eos_token_id
        self.last_n = [sp.n for sp in params]
        results = []
        for request, sp in zip(requests, params):
            g = torch.Generator().manual_seed(sp.seed)
            outs = []
            for _ in range(sp.n):
                ids, gen, logp, finish, reason = list(request["prompt_token_ids"]), [], 0.0, "length", None
                for _ in range(sp.max_tokens):
                    logits = self.model(torch.tensor([ids])).logits[0, -1].float()
                    lp = torch.log_softmax(logits, -1)
                    if sp.temperature == 0:
                        t = int(lp.argmax())
                    else:
                        t = int(torch.multinomial(torch.softmax(logits / sp.temperature, -1), 1, generator=g))
                    ids.append(t)
                    gen.append(t)
                    logp += float(lp[t])
                    if t == eos:
                        finish = "stop"
                        break
                    text = self.tokenizer.decode(gen, skip_special_tokens=True)
                    if sp.stop and any(s in text for s in sp.stop):
                        finish, reason = "stop", sp.stop[0]
                        break
                text = self.tokenizer.decode(gen, skip_special_tokens=True)
                if reason is not None:
                    text = text.split(reason, 1)[0]
                outs.append(_Out(gen, text, logp, finish, reason))
            results.append(_RequestOut(outs))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _FakeLLM
    module.SamplingParams = _SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        # the backend sets what vLLM's in-process launcher reads: restore the environment afterwards
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    _FakeLLM.instances.clear()
    return module


# ---------------------------------------------------------------------------------------------------------------
# The contract, checked the same way for every backend.


def _check_contract(backend, policy, prefixes, *, n, max_new_tokens, stop, temperature=1.0, seed=0):
    budget = backend.budget
    before = (budget.generated_tokens, budget.prefill_tokens)
    out = backend.sample(
        prefixes,
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop=stop,
        generator=torch.Generator().manual_seed(seed),
    )
    assert len(out) == len(prefixes) and all(len(group) == n for group in out)
    eos = policy.eos_token_id
    for group in out:
        for c in group:
            assert isinstance(c, Continuation)
            assert 1 <= c.num_tokens <= max_new_tokens
            assert not (c.finished and c.stopped)
            if c.finished:
                assert c.token_ids[-1] == eos
            if c.stopped:
                assert stop not in c.text
                assert stop in policy.tokenizer.decode(list(c.token_ids))
            if c.truncated:
                assert c.num_tokens == max_new_tokens
            assert c.logprob <= 0.0
    kinds = {(c.finished, c.stopped) for g in out for c in g}
    assert kinds == {(True, False), (False, True), (False, False)}, (
        "every way a row can end must be exercised"
    )
    distinct = list(dict.fromkeys(prefixes))
    assert budget.prefill_tokens - before[1] == sum(len(e) for e in policy.encode(distinct))
    assert budget.generated_tokens - before[0] == sum(c.num_tokens for g in out for c in g)
    return out


def test_hf_backend_meets_the_contract(policy):
    backend = make_backend("hf", policy, Budget())
    assert isinstance(backend, HFBackend)
    out = _check_contract(backend, policy, PREFIXES, n=3, max_new_tokens=10, stop=STOP)
    again = _check_contract(backend, policy, PREFIXES, n=3, max_new_tokens=10, stop=STOP)
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in again]  # seeded


def test_vllm_backend_meets_the_contract_and_agrees_with_hf(policy, fake_vllm):
    backend = make_backend("vllm", policy, Budget())
    assert type(backend).__name__ == "VLLMBackend"
    out = _check_contract(backend, policy, PREFIXES, n=3, max_new_tokens=10, stop=STOP)
    again = _check_contract(backend, policy, PREFIXES, n=3, max_new_tokens=10, stop=STOP)
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in again]  # seeded
    assert len({c.token_ids for g in out for c in g}) > 1
    # Greedy decoding is deterministic, so both backends must produce the very same continuations, flags,
    # text, log-probs and budget counts on the same model.
    hf_budget, vl_budget = Budget(), Budget()
    hf = HFBackend(policy, hf_budget).sample(PREFIXES, n=2, max_new_tokens=12, temperature=0.0, stop=STOP)
    backend.budget = vl_budget
    vl = backend.sample(PREFIXES, n=2, max_new_tokens=12, temperature=0.0, stop=STOP)
    assert fake_vllm.LLM.instances[-1].last_n == [1, 1]  # one greedy row per distinct prefix, repeated
    assert all(len(g) == 2 and g[0] == g[1] for g in vl)
    assert {(c[0].finished, c[0].stopped) for c in hf} == {(True, False), (False, True)}
    for a, b in zip(hf, vl):
        assert (a[0].token_ids, a[0].text, a[0].finished, a[0].stopped) == (
            b[0].token_ids,
            b[0].text,
            b[0].finished,
            b[0].stopped,
        )
        assert a[0].logprob == pytest.approx(b[0].logprob, abs=1e-4)
    assert (hf_budget.generated_tokens, hf_budget.prefill_tokens) == (
        vl_budget.generated_tokens,
        vl_budget.prefill_tokens,
    )
    assert backend.greedy(PREFIXES[:1], max_new_tokens=12, stop=STOP)[0].token_ids == hf[0][0].token_ids


def test_vllm_engine_is_built_from_an_export_without_the_value_head(policy, fake_vllm, tmp_path):
    from llm_rl.generation.vllm import export_for_vllm

    out = export_for_vllm(policy, tmp_path / "export")
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert not (out / "value_head.safetensors").exists()
    backend = make_backend("vllm", policy, None)
    engine = fake_vllm.LLM.instances[-1]
    for name, p in policy.model.named_parameters():
        assert torch.equal(dict(engine.model.named_parameters())[name], p), name
    assert backend.sync_weights() is False  # built from the current weights: nothing to push


def test_vllm_weights_follow_optimizer_steps(tiny_path, fake_vllm):
    policy = _perturbed_policy(tiny_path)
    backend = make_backend("vllm", policy, Budget())
    engine = fake_vllm.LLM.instances[-1]
    backend.sample(PREFIXES[:1], n=2, max_new_tokens=4)
    assert backend.weight_syncs == 0
    opt = torch.optim.SGD(policy.model.parameters(), lr=0.5)
    policy.sequence_logprobs(PREFIXES[:1], ["3 + 4 = 7\n"]).sum().backward()
    opt.step()
    backend.sample(PREFIXES[:1], n=2, max_new_tokens=4)
    assert backend.weight_syncs == 1 and engine.cache_resets == 1
    for name, p in policy.model.named_parameters():
        assert torch.equal(dict(engine.model.named_parameters())[name], p), name
    backend.sample(PREFIXES[:1], n=2, max_new_tokens=4)
    assert backend.weight_syncs == 1  # unchanged weights are not pushed again


def test_vllm_sync_merges_a_lora_adapter(tiny_path, fake_vllm):
    policy = _perturbed_policy(tiny_path, lora=True)
    assert policy.is_peft
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}
    backend = make_backend("vllm", policy, Budget())
    engine = fake_vllm.LLM.instances[-1]
    with torch.no_grad():  # an adapter update, as an optimizer step would make
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    backend.sample(PREFIXES[:1], n=1, max_new_tokens=3)
    assert backend.weight_syncs == 1
    for n, p in policy.model.named_parameters():  # unmerged again after the push
        if "lora_" not in n:
            assert torch.allclose(p, base[n], atol=1e-6), n
    # The engine now computes what the adapted policy computes.
    ids = torch.tensor(policy.encode(PREFIXES[:1]))
    with torch.no_grad():
        want = policy.model(ids).logits
        got = engine.model(ids).logits
        with policy.model.disable_adapter():
            base_logits = policy.model(ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(want, base_logits, atol=1e-3), "the adapter update must matter for this test"


def test_vllm_missing_names_the_extra(policy, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # "not installed"
    with pytest.raises(ImportError, match=r"relabel-rl\[vllm\]"):
        make_backend("vllm", policy, None)


def test_unknown_backend_is_rejected(policy):
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_backend("tgi", policy, None)
