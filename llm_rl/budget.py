"""Exact budget counters: the common currency of the comparison.

Every arm spends the same things — tokens generated, prompt/prefix tokens prefilled, verifier calls, optimizer
steps and wall time — and the comparison is only fair if each arm counts them the same way, exactly, where the
spending happens (the generation backend counts tokens it actually produced; the contained verifier counts calls).
A run stops when the counter on the chosen axis reaches the limit. The counters are saved in every checkpoint, so a
resumed run continues from the spend it had, wall time included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from llm_rl.config import BudgetConfig

__all__ = ["Budget"]


@dataclass
class Budget:
    """Counters of what a run has spent. ``wall_time`` accumulates across resumed sessions."""

    generated_tokens: int = 0
    prefill_tokens: int = 0
    verifier_calls: int = 0
    optimizer_steps: int = 0
    wall_time: float = 0.0
    _session_start: float = field(default_factory=time.perf_counter, repr=False, compare=False)
    _wall_at_start: float = field(default=0.0, repr=False, compare=False)

    # --- counting -------------------------------------------------------------------------------------------
    def add_generated(self, n: int) -> None:
        self.generated_tokens += int(n)

    def add_prefill(self, n: int) -> None:
        self.prefill_tokens += int(n)

    def add_verifier_calls(self, n: int = 1) -> None:
        self.verifier_calls += int(n)

    def add_optimizer_step(self, n: int = 1) -> None:
        self.optimizer_steps += int(n)

    def tick(self) -> None:
        """Bring ``wall_time`` up to date (called before reading or saving the counters)."""
        self.wall_time = self._wall_at_start + (time.perf_counter() - self._session_start)

    # --- reading --------------------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.generated_tokens + self.prefill_tokens

    def value(self, axis: str) -> float:
        """The spend on ``axis`` (one of `BudgetAxis`)."""
        self.tick()
        if axis == "total_tokens":
            return float(self.total_tokens)
        if axis not in (
            "generated_tokens",
            "prefill_tokens",
            "verifier_calls",
            "optimizer_steps",
            "wall_time",
        ):
            raise ValueError(f"unknown budget axis {axis!r}")
        return float(getattr(self, axis))

    def exhausted(self, cfg: BudgetConfig) -> bool:
        return self.value(cfg.axis) >= cfg.limit

    def fraction(self, cfg: BudgetConfig) -> float:
        return min(1.0, self.value(cfg.axis) / cfg.limit)

    def as_dict(self) -> dict[str, float]:
        """The counters, for metrics records (``total_tokens`` included)."""
        self.tick()
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["total_tokens"] = self.total_tokens
        return d

    # --- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.tick()
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore saved counters *into this object* (so closures holding it see the resumed spend)."""
        restored = Budget.from_state_dict(state)
        for name in ("generated_tokens", "prefill_tokens", "verifier_calls", "optimizer_steps", "wall_time"):
            setattr(self, name, getattr(restored, name))
        self._wall_at_start, self._session_start = restored._wall_at_start, restored._session_start

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude the time spent inside (evaluation, checkpointing) from ``wall_time``."""
        self.tick()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._session_start += time.perf_counter() - start
            self.tick()

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Budget:
        b = cls(
            **{
                k: state[k]
                for k in ("generated_tokens", "prefill_tokens", "verifier_calls", "optimizer_steps")
            }
        )
        b.wall_time = b._wall_at_start = float(state.get("wall_time", 0.0))
        b._session_start = time.perf_counter()
        return b
