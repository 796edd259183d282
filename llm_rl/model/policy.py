"""The policy: a causal LM (optionally behind a PEFT adapter) plus a value head, saved and loaded together.

Why our own value head instead of TRL's ``AutoModelForCausalLMWithValueHead``? TRL marks its value-head classes
experimental, and they wrap the LM in a way PEFT and ``save_pretrained`` only partly agree on. The head here is a
separate ``nn.Module`` reading the LM's last hidden state: the LM (or its adapter) saves with the usual
``save_pretrained``, the head beside it as ``value_head.safetensors`` + ``value_head.json``, and with PEFT only
the adapter and the head train.

Values are squashed to [0, 1] with a sigmoid because every reward in this project is a verifier score in [0, 1].

Scoring text: a continuation is tokenised *separately* from its prefix (``ids(prefix) + ids(continuation)``), the
same split the generation backend produces, so the log-prob of a sampled step is the log-prob of the tokens that
were actually sampled. Continuations may also be given as token-id lists (e.g. `Continuation.token_ids`, which
include the delimiter/EOS token that ended the step).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from llm_rl.config import LoraSettings
from relabel_rl.config import ConfigError

__all__ = [
    "Policy",
    "TokenLogprobs",
    "ValueHead",
    "lora_config",
    "position_ids_from_mask",
    "quiet_hf_progress",
]

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"

Text = str | Sequence[int]


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Hide transformers' per-file load/save progress bars (a run loads and saves policies many times)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (so a left-padded row starts at 0), ``[B, L]``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ValueHead(nn.Module):
    """A scalar value from the LM's last hidden state: linear (``hidden=0``) or a one-hidden-layer MLP.

    The head always computes in float32, whatever the LM's dtype. The output is a logit; `Policy.values`
    applies the sigmoid.
    """

    def __init__(self, hidden_size: int, *, hidden: int = 0) -> None:
        super().__init__()
        if hidden < 0:
            raise ValueError(f"value head hidden width must be >= 0, got {hidden}")
        self.hidden_size = int(hidden_size)
        self.hidden = int(hidden)
        if hidden == 0:
            self.net: nn.Module = nn.Linear(hidden_size, 1)
        else:
            self.net = nn.Sequential(nn.Linear(hidden_size, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[..., hidden_size]`` → value logits ``[...]``."""
        return self.net(hidden_states.float()).squeeze(-1)

    def config(self) -> dict[str, int]:
        return {"hidden_size": self.hidden_size, "hidden": self.hidden}


@dataclass(frozen=True)
class TokenLogprobs:
    """Per-token log-probs of N continuations, right-padded to the longest (``T`` tokens).

    Attributes:
      logprobs: ``[N, T]`` log-prob of each continuation token given everything before it (0 where masked);
        differentiable.
      mask: ``[N, T]`` float, 1 on real continuation tokens.
      token_ids: ``[N, T]`` the continuation tokens (pad id where masked).
      values: ``[N]`` the value (in [0, 1]) of each *prefix* (at its last token), or None if not requested.
    """

    logprobs: torch.Tensor
    mask: torch.Tensor
    token_ids: torch.Tensor
    values: torch.Tensor | None = None

    def sums(self) -> torch.Tensor:
        """``[N]`` the sequence log-prob of each continuation."""
        return (self.logprobs * self.mask).sum(-1)


class Policy(nn.Module):
    """A causal LM with a value head. ``.model`` is a ``PreTrainedModel`` or a ``PeftModel``.

    Args:
      model: the causal LM.
      tokenizer: its tokenizer (a pad token is set to EOS if it has none).
      value_head: an existing head; by default a fresh one (linear if ``value_head_hidden`` is 0).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        value_head: ValueHead | None = None,
        *,
        value_head_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        hidden_size = int(self._base_config().hidden_size)
        self.value_head = (
            value_head if value_head is not None else ValueHead(hidden_size, hidden=value_head_hidden)
        )
        self.value_head.to(self.device)

    # --- properties ---------------------------------------------------------------------------------------
    def _base_config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def max_positions(self) -> int | None:
        """The model's context length (``max_position_embeddings``), if it declares one."""
        return getattr(self._base_config(), "max_position_embeddings", None)

    # --- tokenising ---------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text (prefixes get BOS when the tokenizer adds one; continuations should not)."""
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token-id lists → ``(input_ids [B, L], attention_mask [B, L])`` on the policy's device."""
        width = max((len(s) for s in sequences), default=0)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            if s:
                ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _continuation_ids(self, continuations: Sequence[Text]) -> list[list[int]]:
        texts = [c for c in continuations if isinstance(c, str)]
        encoded = iter(self.encode(texts, add_special_tokens=False))
        return [next(encoded) if isinstance(c, str) else [int(t) for t in c] for c in continuations]

    # --- forward ------------------------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, L, V], value logits [B, L])`` for any padding (positions come from the mask)."""
        out = self._run(input_ids, attention_mask)
        return out.logits, self.value_head(out.hidden_states[-1])

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B]`` the value in [0, 1] at each row's last non-pad token (left or right padding)."""
        out = self._run(input_ids, attention_mask)
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.long().flip(-1).argmax(-1)  # [B]
        hidden = out.hidden_states[-1][torch.arange(len(last), device=last.device), last]
        return torch.sigmoid(self.value_head(hidden))

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The LM's forward pass with its hidden states, positions counted over real tokens (any padding)."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )

    def text_values(self, texts: Sequence[str]) -> torch.Tensor:
        """``[B]`` the value in [0, 1] of each text (a prompt or prompt + steps), batched."""
        ids, mask = self.pad_left(self.encode(texts))
        return self.values(ids, mask)

    def token_logprobs(
        self,
        prefixes: Sequence[str],
        continuations: Sequence[Text],
        *,
        temperature: float = 1.0,
        with_values: bool = False,
        detach_values: bool = False,
    ) -> TokenLogprobs:
        """Per-token log-probs of each continuation given its prefix, in one batched forward (with grad).

        Args:
          prefixes: N prompt(+steps) strings, tokenised with special tokens (BOS).
          continuations: N strings (tokenised without special tokens) or token-id lists.
          temperature: divide the logits by this before the softmax (1: the policy itself).
          with_values: also return the value of each prefix (same forward pass).
          detach_values: the value head reads the LM's hidden state detached, so a value loss trains the head
            only and sends no gradient into the LM (`llm_rl.arm_configs.RelabelArmConfig.detach_value_head`).
        """
        if len(prefixes) != len(continuations):
            raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        n = len(prefixes)
        prefix_ids = self.encode(prefixes)
        cont_ids = self._continuation_ids(continuations)
        lengths = [len(p) + len(c) for p, c in zip(prefix_ids, cont_ids)]
        width, t_max = max(lengths, default=0), max((len(c) for c in cont_ids), default=0)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        targets = torch.full((n, t_max), self.pad_token_id, dtype=torch.long)
        tmask = torch.zeros((n, t_max))
        gather_pos = torch.zeros((n, t_max), dtype=torch.long)  # logits position predicting each target
        for i, (p, c) in enumerate(zip(prefix_ids, cont_ids)):
            seq = p + c
            ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
            if c:
                targets[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
                tmask[i, : len(c)] = 1.0
                gather_pos[i, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        device = self.device
        ids, mask, targets, tmask, gather_pos = (
            x.to(device) for x in (ids, mask, targets, tmask, gather_pos)
        )
        out = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=with_values, use_cache=False
        )
        logits = out.logits  # [N, W, V]
        picked = torch.gather(logits, 1, gather_pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()
        if temperature != 1.0:
            picked = picked / temperature
        logprobs = torch.gather(picked.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1) * tmask
        values = None
        if with_values:
            last = torch.as_tensor([len(p) - 1 for p in prefix_ids], device=device)
            hidden = out.hidden_states[-1][torch.arange(n, device=device), last]
            values = torch.sigmoid(self.value_head(hidden.detach() if detach_values else hidden))
        return TokenLogprobs(logprobs=logprobs, mask=tmask, token_ids=targets, values=values)

    def sequence_logprobs(self, prefixes: Sequence[str], continuations: Sequence[Text]) -> torch.Tensor:
        """``[N]`` the summed log-prob of each continuation given its prefix (batched, with grad)."""
        return self.token_logprobs(prefixes, continuations).sums()

    # --- PEFT ---------------------------------------------------------------------------------------------
    def with_lora(self, settings: LoraSettings) -> Policy:
        """A policy whose LM carries a fresh LoRA adapter (`lora_config`; base weights frozen); the value head is
        kept and trains beside the adapter.

        PEFT injects the adapter into the LM *in place*: this policy's ``.model`` becomes the new one's base, so
        use only the returned policy afterwards.
        """
        if self.is_peft:
            raise ValueError("this policy already has a PEFT adapter")
        return Policy(get_peft_model(self.model, lora_config(settings)), self.tokenizer, self.value_head)

    # --- saving -------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the LM (or only its adapter, with PEFT), the tokenizer and the value head to ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_hf_progress():
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(out / VALUE_HEAD_WEIGHTS))
        meta: dict[str, Any] = {**self.value_head.config(), "peft": self.is_peft}
        if self.is_peft:
            meta["base_model"] = str(self.model.peft_config["default"].base_model_name_or_path)
        (out / VALUE_HEAD_CONFIG).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, dtype: torch.dtype = torch.float32, is_trainable: bool = True
    ) -> Policy:
        """Load what `save_pretrained` wrote (a PEFT adapter is re-attached to its recorded base model)."""
        d = Path(directory)
        meta_file = d / VALUE_HEAD_CONFIG
        if not meta_file.exists():
            raise FileNotFoundError(f"{d} has no {VALUE_HEAD_CONFIG}: not a saved Policy (use load_policy)")
        meta = json.loads(meta_file.read_text())
        with quiet_hf_progress():
            tokenizer = AutoTokenizer.from_pretrained(str(d))
            if meta.get("peft"):
                base = AutoModelForCausalLM.from_pretrained(meta["base_model"], dtype=dtype)
                model = PeftModel.from_pretrained(base, str(d), is_trainable=is_trainable)
            else:
                model = AutoModelForCausalLM.from_pretrained(str(d), dtype=dtype)
        head = ValueHead(meta["hidden_size"], hidden=meta["hidden"])
        head.load_state_dict(load_file(str(d / VALUE_HEAD_WEIGHTS)))
        return cls(model, tokenizer, head)


# ---------------------------------------------------------------------------------------------------------------
# The recipe's LoRA section -> peft.LoraConfig

# LoraConfig fields the recipe sets under their own keys (or that the policy fixes), and where.
LORA_OWN_KEYS = {
    "r": "'model.lora.r'",
    "lora_alpha": "'model.lora.alpha'",
    "lora_dropout": "'model.lora.dropout'",
    "target_modules": "'model.lora.target_modules'",
    "task_type": "the policy (a causal LM: CAUSAL_LM)",
}


def lora_config(settings: LoraSettings) -> LoraConfig:
    """The `peft.LoraConfig` of a recipe's ``model.lora``: ``r``, ``alpha``, ``dropout``, ``target_modules`` (a list,
    a regex, or ``"all-linear"``) and every field of ``model.lora.peft``, validated by PEFT's own constructor.

    Raises:
      ConfigError: a ``peft`` key that has a key of its own (naming it), an unknown LoraConfig field (with the
        nearest one), or PEFT's own error, each naming ``model.lora.peft``.
    """
    extra = dict(settings.peft)
    for key in extra:
        if key in LORA_OWN_KEYS:
            raise ConfigError(f"'model.lora.peft.{key}' is set by {LORA_OWN_KEYS[key]}, not here")
    valid = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    for key in extra:
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean 'model.lora.peft.{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown peft.LoraConfig field 'model.lora.peft.{key}'{hint}")
    targets = settings.target_modules
    try:
        return LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
            **extra,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"'model.lora.peft': peft.LoraConfig refused it: {e}") from None
