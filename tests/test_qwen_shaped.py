"""The real-model path on a model shaped like `Qwen/Qwen2.5-*-Instruct`, built offline.

The tiny preset is a Llama with a character tokenizer: one token per character, a BOS token, left padding. A
real Qwen2.5 differs in every one of those, and each difference is a way to break the arms: a byte-level BPE
whose pre-tokenizer glues punctuation to the newline after it (``".\\n"`` is one token, so a step can end inside a
token), no BOS, ``<|im_end|>`` as EOS with ``<|endoftext|>`` as padding, right padding by default, and the
``Qwen2ForCausalLM`` class. Here a Qwen2 model with such a tokenizer (BPE trained on the task's own text, Qwen's
pre-tokenizer pattern) is saved to a directory and given to ``llm-rl compare`` as ``model.name_or_path`` — the
code path a user with ``Qwen/Qwen2.5-0.5B-Instruct`` takes — and all three arms and the warm start run end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# Qwen2's pre-tokenizer pattern (tokenizer.json of Qwen2.5): letters, single digits, punctuation runs with the
# newlines that follow them, newline runs, spaces.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def build_qwen_shaped(out: Path) -> Path:
    """A 2-layer Qwen2ForCausalLM and a byte-level BPE tokenizer (Qwen's pattern and special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from verifiers.tasks.chain_arithmetic import ChainArithmetic

    rows = ChainArithmetic().generate(300, seed=123, min_steps=1, max_steps=3)
    corpus = [r["prompt"] + r["solution"] for r in rows]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",  # Qwen2.5's default; the backends must not rely on left padding
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in Qwen2.5
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return build_qwen_shaped(tmp_path_factory.mktemp("qwen") / "model")


def test_the_tokenizer_is_qwen_like(qwen_dir):
    from llm_rl.model import load_policy

    policy = load_policy(qwen_dir)
    tok = policy.tokenizer
    assert type(policy.model).__name__ == "Qwen2ForCausalLM"
    assert tok.bos_token is None and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    pieces = tok.convert_ids_to_tokens(tok("Start 3. Add 4.\n3 + 4 = 7\n")["input_ids"])
    assert ".\u010a" in pieces  # ".\n" is one token: a step delimiter inside a token


def test_compare_runs_every_arm_on_a_qwen_shaped_model(qwen_dir, tmp_path):
    from llm_rl.compare import cmd_compare
    from relabel_rl.rundir import read_metrics

    recipe = {
        "output_dir": str(tmp_path / "cmp"),
        "model": {"name_or_path": str(qwen_dir)},
        "task": {
            # chain arithmetic scored by the share of digits: a dense reward an untrained model varies on, so
            # every arm has a gradient from the first step
            "verifier": "test_multiprocess:DigitChain",
            "train_size": 32,
            "test_size": 8,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_steps": 3,
            "max_step_tokens": 12,
            "max_completion_tokens": 36,
        },
        "warm_start": {"max_steps": 4, "eval_every": 2, "batch_size": 8, "eval_examples": 4},
        "budget": {"axis": "generated_tokens", "limit": 600, "eval_every": 600},
        "eval": {"num_examples": 4, "pass_k": 2},
        "optim": {"learning_rate": 1e-3, "prompts_per_step": 2, "checkpoint_every": 2},
        "grpo": {"trl": {"num_generations": 2, "per_device_train_batch_size": 4}},
        "relabel": {"puct": {"num_simulations": 2}, "num_candidates": 2},
        "mc_value": {"num_samples": 2, "num_rollouts": 1},
        "compare": {"arms": ["grpo", "relabel", "mc_value"], "seeds": [0], "probe_variance": False},
    }
    import yaml

    path = tmp_path / "qwen.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cmd_compare([str(path)]) == 0
    runs = tmp_path / "cmp" / "runs"
    for arm in ("grpo", "relabel", "mc_value"):
        final = json.loads((runs / f"{arm}-seed0" / "final_metrics.json").read_text())
        assert final["generated_tokens"] >= 600 and final["optimizer_steps"] >= 1, arm
        assert 0.0 <= final["pass@1"] <= 1.0
        trains = [r for r in read_metrics(runs / f"{arm}-seed0" / "metrics.jsonl") if r["kind"] == "train"]
        assert any(r["grad_norm"] > 0 for r in trains), arm  # it learnt something, not a run of zero losses
    assert (tmp_path / "cmp" / "report.md").exists()
