"""The tiny preset, the Policy (value head, log-probs) and save/load with and without PEFT."""

from __future__ import annotations

import json

import pytest
import torch

from llm_rl.config import LoraSettings, ModelConfig
from llm_rl.model import build_tiny_model, load_policy, resolve_model_path
from llm_rl.model.policy import Policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", hidden_size=32, num_layers=1, num_heads=2
    )


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_tiny_preset_is_deterministic_and_loads_through_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = build_tiny_model(tmp_path / "a", hidden_size=32, num_layers=1, num_heads=2, seed=3)
    b = build_tiny_model(tmp_path / "b", hidden_size=32, num_layers=1, num_heads=2, seed=3)
    c = build_tiny_model(tmp_path / "c", hidden_size=32, num_layers=1, num_heads=2, seed=4)
    ma, mb, mc = (AutoModelForCausalLM.from_pretrained(str(p)) for p in (a, b, c))
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert ma.config.hidden_size == 32 and ma.config.num_hidden_layers == 1
    tok = AutoTokenizer.from_pretrained(str(a))
    text = "Start 12. Add 5, times 3.\n12 + 5 = 17\nAnswer: 47"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per character, plus BOS
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("\n", add_special_tokens=False)["input_ids"]) == 1
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_build_tiny_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tmp_path / "x", hidden_size=30, num_heads=4)


def test_resolve_model_path(tmp_path):
    assert resolve_model_path(ModelConfig(name_or_path="org/some-model"), tmp_path) == "org/some-model"
    cfg = ModelConfig(tiny_hidden_size=32, tiny_num_layers=1, tiny_num_heads=2)
    path = resolve_model_path(cfg, tmp_path)
    assert path == str(tmp_path / "base_model")
    stamp = (tmp_path / "base_model" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(cfg, tmp_path) == path  # built once
    assert (tmp_path / "base_model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "base_model" / "relabel_rl_tiny.json").read_text())["hidden_size"] == 32


def test_load_policy_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_policy(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype"):
        load_policy(tmp_path / "empty", dtype="float8")


def test_logprobs_match_a_plain_forward(tiny_dir):
    torch.manual_seed(0)
    policy = load_policy(tiny_dir)
    prefixes, conts = ["Start 3. Add 4.\n", "ab"], ["3 + 4 = 7\n", "c"]
    tl = policy.token_logprobs(prefixes, conts)
    assert tl.mask.sum(-1).tolist() == [10.0, 1.0]
    for i, (p, c) in enumerate(zip(prefixes, conts)):
        ids = torch.tensor([policy.encode([p])[0] + policy.encode([c], add_special_tokens=False)[0]])
        logp = policy.model(input_ids=ids).logits.log_softmax(-1)[0]
        plen = len(policy.encode([p])[0])
        expected = sum(logp[plen - 1 + j, ids[0, plen + j]] for j in range(len(c)))
        assert torch.allclose(tl.sums()[i], expected, atol=1e-5)
    # token-id continuations give the same numbers as strings
    as_ids = [policy.encode([c], add_special_tokens=False)[0] for c in conts]
    assert torch.allclose(policy.sequence_logprobs(prefixes, as_ids), tl.sums(), atol=1e-6)
    tl.sums().sum().backward()  # differentiable
    assert any(p.grad is not None for p in policy.model.parameters())


def test_values_ignore_padding_side(tiny_dir):
    torch.manual_seed(0)
    policy = load_policy(tiny_dir, value_head_hidden=8)
    texts = ["Start 3.\n", "Start 12. Add 5, times 3.\n"]
    left = policy.text_values(texts)
    assert left.shape == (2,) and bool(((left > 0) & (left < 1)).all())
    seqs = policy.encode(texts)
    width = max(map(len, seqs))
    ids = torch.tensor([s + [policy.pad_token_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    right = policy.values(ids, mask)
    single = torch.cat([policy.text_values([t]) for t in texts])
    assert torch.allclose(left, right, atol=1e-5) and torch.allclose(left, single, atol=1e-5)
    tl = policy.token_logprobs(texts, ["x", "y"], with_values=True)
    assert torch.allclose(tl.values, single, atol=1e-5)


def test_value_head_save_load_without_peft(tiny_dir, tmp_path):
    torch.manual_seed(1)
    policy = load_policy(tiny_dir, value_head_hidden=4)
    _perturb(policy, seed=5)
    policy.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "value_head.json").read_text())
    assert meta == {"hidden_size": 32, "hidden": 4, "peft": False}
    torch.manual_seed(99)  # a fresh head would differ
    loaded = load_policy(tmp_path / "saved", value_head_hidden=0)  # the saved head wins
    texts = ["Start 1. Add 2.\n", "x"]
    assert torch.allclose(loaded.text_values(texts), policy.text_values(texts), atol=1e-6)
    assert torch.allclose(
        loaded.sequence_logprobs(texts, ["a", "b"]), policy.sequence_logprobs(texts, ["a", "b"])
    )


def test_value_head_save_load_with_peft(tiny_dir, tmp_path):
    torch.manual_seed(2)
    policy = load_policy(tiny_dir, lora=LoraSettings(enabled=True, r=4, alpha=8))
    assert policy.is_peft
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head.") for n in trainable)
    assert any(n.startswith("value_head.") for n in trainable)
    _perturb(policy, seed=6)  # LoRA B starts at zero: perturb so the adapter matters
    policy.save_pretrained(tmp_path / "peft")
    assert (tmp_path / "peft" / "adapter_config.json").exists()
    assert not (tmp_path / "peft" / "model.safetensors").exists()  # only the adapter is saved
    torch.manual_seed(123)
    loaded = load_policy(tmp_path / "peft", lora=LoraSettings(enabled=True))  # already has an adapter: kept
    assert loaded.is_peft
    texts = ["Start 1. Add 2.\n", "x"]
    assert torch.allclose(loaded.text_values(texts), policy.text_values(texts), atol=1e-6)
    assert torch.allclose(
        loaded.sequence_logprobs(texts, ["a", "b"]), policy.sequence_logprobs(texts, ["a", "b"])
    )
    base = load_policy(tiny_dir)
    assert not torch.allclose(
        base.sequence_logprobs(texts, ["a", "b"]), loaded.sequence_logprobs(texts, ["a", "b"])
    )
    with pytest.raises(ValueError, match="already has"):
        loaded.with_lora(LoraSettings(enabled=True))
    assert isinstance(loaded, Policy)
