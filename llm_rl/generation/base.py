"""The generation-backend contract every arm samples through, and the metering every backend shares.

A backend is a *metered resource*: it holds the run's budget (anything with ``charge(**counts)``, in practice
`llm_rl.harness.budget.Budget`; None counts nothing, e.g. for evaluation or the variance probe) and charges it
itself, exactly, for what it did:

* ``generated_tokens`` += every token it sampled, up to and including the delimiter or EOS that ended a row
  (nothing after it);
* ``prefill_tokens`` += the tokens of each *distinct* prefix of a call, once (left padding excluded), and the
  tokens of every prefix the value head scores (`GenerationBackend.prefix_values`: a second forward pass).

Arms therefore never count anything; they call ``sample``/``greedy``/``prefix_values`` and the budget moves.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["Continuation", "GenerationBackend", "Meter", "check_sample_args"]


class Meter(Protocol):
    """What a backend charges: the run's `Budget` (``charge(generated_tokens=..., prefill_tokens=...)``)."""

    def charge(self, **amounts: int) -> None: ...


@dataclass(frozen=True)
class Continuation:
    """One sampled continuation of a prefix.

    Attributes:
      text: the generated text, without the stop delimiter (and anything after it in the same token) and
        without EOS.
      token_ids: every generated token, including the delimiter or EOS token that ended it (exactly what was
        counted in the budget). Pass these to `Policy.sequence_logprobs` to score the continuation as sampled.
      logprob: the sum of the policy's log-probs (temperature 1) of ``token_ids``.
      finished: EOS was generated (the completion is over).
      stopped: the stop delimiter was generated (a step ended; more steps may follow).
      Neither flag set: the row hit ``max_new_tokens`` (or the model's context length).
    """

    text: str
    token_ids: tuple[int, ...]
    logprob: float
    finished: bool
    stopped: bool

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def truncated(self) -> bool:
        return not (self.finished or self.stopped)


def check_sample_args(*, n: int, max_new_tokens: int, temperature: float, stop: str | None) -> None:
    """The argument checks every `GenerationBackend.sample` makes (one place, so the backends agree)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if stop == "":
        raise ValueError("stop must be a non-empty string or None")


class GenerationBackend(ABC):
    """What the arms sample from (module docstring).

    Args:
      policy: the `llm_rl.model.Policy` whose current weights generate (and whose value head scores prefixes).
      budget: the meter to charge, or None to count nothing.
    """

    def __init__(self, policy: Any, budget: Meter | None = None) -> None:
        self.policy = policy
        self.budget = budget
        self._warned_context = False

    @abstractmethod
    def sample(
        self,
        prefixes: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop: str | None = "\n",
        generator: torch.Generator | None = None,
    ) -> list[list[Continuation]]:
        """``n`` continuations of every prefix (``result[i][j]``: the j-th of ``prefixes[i]``), one batched call."""

    def greedy(
        self, prefixes: Sequence[str], *, max_new_tokens: int, stop: str | None = None
    ) -> list[Continuation]:
        """The argmax continuation of every prefix (``sample`` at temperature 0)."""
        return [
            row[0]
            for row in self.sample(prefixes, n=1, max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
        ]

    @torch.no_grad()
    def prefix_values(self, prefixes: Sequence[str]) -> np.ndarray:
        """The policy's value head at the end of each prefix, in [0, 1]: one batched forward pass, whose tokens
        are charged as prefill (it is a second pass over prefixes the sampler also prefills)."""
        input_ids, attention_mask = self.policy.pad_left(self.policy.encode(prefixes))
        values = self.policy.values(input_ids, attention_mask)
        self._charge(prefill=int(attention_mask.sum()))
        return values.detach().float().cpu().numpy()

    def _room(self, longest: int, max_new_tokens: int) -> int:
        """New tokens a call may generate after a prefix of ``longest`` tokens: ``max_new_tokens``, cut (with one
        warning per backend) to what the model's context length leaves."""
        limit = self.policy.max_positions
        if limit is None or longest + max_new_tokens <= limit:
            return max_new_tokens
        steps = limit - longest
        if steps < 1:
            raise ValueError(
                f"a prefix of {longest} tokens leaves no room in the model's {limit}-token context"
            )
        if not self._warned_context:
            warnings.warn(
                f"generation truncated to {steps} new tokens by the model's context length ({limit}); "
                "such rows are neither finished nor stopped",
                stacklevel=3,
            )
            self._warned_context = True
        return steps

    def _charge(self, *, prefill: int = 0, generated: int = 0) -> None:
        if self.budget is not None:
            self.budget.charge(prefill_tokens=prefill, generated_tokens=generated)
