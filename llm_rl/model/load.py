"""Model loading: one path for a hub id, a local directory, and the built-in tiny preset.

Every policy is loaded with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``. The
``tiny`` preset (for CPU work and tests) is no exception: `build_tiny_model` *writes* a small Llama-style model and
a character-level tokenizer to disk with ``save_pretrained`` and the caller then loads them back through the very
same ``from_pretrained`` path a real model takes, so the tiny runs exercise the production code. Nothing is
downloaded: the tiny preset is built from a config, not fetched.

Why a character-level tokenizer? The quickstart task (chain arithmetic) is digits, operators and newlines; one
token per character keeps the vocabulary at ~100 entries (so a 64-wide model is mostly transformer, not
embedding table) and makes the step delimiter ``"\\n"`` a single token, which the generation backend uses to stop
a step on a token id rather than by decoding text.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from llm_rl.config import LoraSettings, ModelConfig
from llm_rl.model.policy import Policy, quiet_hf_progress
from relabel_rl.config import ConfigError
from relabel_rl.rundir import config_differences

__all__ = [
    "SPECIAL_TOKENS",
    "TINY_PRESET",
    "build_char_tokenizer",
    "build_tiny_model",
    "load_policy",
    "resolve_model_path",
]

TINY_PRESET = "tiny"
# <pad> <bos> <eos> <unk> take ids 0..3, in this order.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
_CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c\n"] + ["\n"]  # printable ASCII + newline
_TINY_MARKER = "relabel_rl_tiny.json"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------------------------
# The tiny preset


def build_char_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A character-level tokenizer: printable ASCII + ``"\\n"``, one token per character.

    Built with the ``tokenizers`` library (a WordLevel model over single characters, a pre-tokenizer that isolates
    every character, a ``Fuse`` decoder so decoding concatenates without spaces, and a post-processor that
    prepends ``<bos>``) and wrapped as a ``PreTrainedTokenizerFast``. Characters outside the vocabulary map to
    ``<unk>``.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _CHARS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    bos_id = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Write a small Llama-style causal LM and the character tokenizer to ``out_dir``; return ``out_dir``.

    The weights are initialised from ``seed`` inside a forked RNG (the caller's global torch RNG is untouched),
    so the same arguments give bit-identical files. Load the result with `load_policy` (or any
    ``from_pretrained``). Input and output embeddings are tied; the MLP is 4x ``hidden_size`` wide.
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    for name, value in (
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("max_positions", max_positions),
    ):
        if value <= 0:
            raise ValueError(f"tiny model: {name} must be > 0, got {value}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with quiet_hf_progress():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    spec = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_positions": max_positions,
        "seed": seed,
    }
    (out / _TINY_MARKER).write_text(json.dumps(spec, indent=2))
    return out


def resolve_model_path(cfg: ModelConfig, run_dir: str | Path, *, seed: int = 0) -> str:
    """The ``from_pretrained`` path of ``cfg.name_or_path``: ``"tiny"`` builds the preset into
    ``run_dir/base_model`` once; anything else (a local directory or a hub id) is returned unchanged.

    Raises:
      ConfigError: ``run_dir/base_model`` holds a tiny model built with other ``model.tiny_*`` settings (the warm
        start and every LoRA adapter of the directory were made from it, so it is never rebuilt in place).
    """
    if cfg.name_or_path != TINY_PRESET:
        return cfg.name_or_path
    target = Path(run_dir) / "base_model"
    spec = {
        "hidden_size": cfg.tiny_hidden_size,
        "num_layers": cfg.tiny_num_layers,
        "num_heads": cfg.tiny_num_heads,
        "max_positions": cfg.tiny_max_positions,
        "seed": seed,
    }
    marker = target / _TINY_MARKER
    if marker.exists() and (target / "config.json").exists():
        built = json.loads(marker.read_text())
        if built != spec:
            differ = "; ".join(config_differences({"model": _tiny_keys(built)}, {"model": _tiny_keys(spec)}))
            raise ConfigError(
                f"{target} holds the tiny model this output directory's runs started from, built with other "
                f"settings ({differ}); use another output_dir, or the recorded values"
            )
        return str(target)
    build_tiny_model(target, **spec)
    return str(target)


def _tiny_keys(spec: dict) -> dict:
    """A recorded tiny spec under its recipe keys (``hidden_size`` -> ``tiny_hidden_size``)."""
    keys = {"hidden_size": "tiny_hidden_size", "num_layers": "tiny_num_layers", "num_heads": "tiny_num_heads"}
    keys["max_positions"] = "tiny_max_positions"
    return {keys.get(k, f"base_model_{k}"): v for k, v in spec.items()}


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_policy(
    path: str | Path,
    *,
    lora: LoraSettings | None = None,
    dtype: str = "float32",
    value_head_hidden: int = 0,
) -> Policy:
    """Load a `Policy` from a model directory or hub id.

    * A directory written by `Policy.save_pretrained` (it has ``value_head.json``) is restored as saved: the
      model (or base model + PEFT adapter) and its trained value head; ``value_head_hidden`` is then ignored.
    * Anything else is a plain causal LM: it gets a fresh value head (``value_head_hidden`` 0: linear, >0: an
      MLP of that width) initialised from the global torch RNG.

    With ``lora.enabled`` and a model that has no adapter yet, a fresh LoRA adapter is attached (PEFT); only the
    adapter and the value head are then trainable.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    torch_dtype = _DTYPES[dtype]
    p = Path(path)
    if (p / "value_head.json").exists():
        policy = Policy.from_pretrained(p, dtype=torch_dtype)
    else:
        if p.exists() and not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} is a directory but holds no model (no config.json)")
        # A local directory is recorded absolute (a PEFT adapter stores its base model's path).
        name = str(p.resolve()) if p.exists() else str(path)
        with quiet_hf_progress():
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        policy = Policy(model, tokenizer, value_head_hidden=value_head_hidden)
    if lora is not None and lora.enabled and not policy.is_peft:
        policy = policy.with_lora(lora)
    return policy
