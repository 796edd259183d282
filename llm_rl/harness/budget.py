"""Exact budget counters: the common currency of the comparison.

Every arm spends the same things and the comparison is only fair if each is counted the same way, exactly, where
the spending happens — by the metered resources themselves, never by an arm:

* ``generated_tokens`` / ``prefill_tokens`` — by the generation backend (`llm_rl.generation`), for every token it
  sampled and every prompt/prefix token it ran through the model (the relabeller's value-head pass included);
* ``outcome_verifier_calls`` / ``step_verifier_calls`` — by the metered verifier (`llm_rl.harness.metering`): one
  per score of a finished completion, one per ``check_step`` of a verifier that has step checks;
* ``prompts`` — training prompts (episodes) consumed, by the harness's prompt batches (a prompt counts the first
  time an arm reads it) and, for GRPO, by the TRL bridge (distinct prompts TRL generated for);
* ``optimizer_steps`` — by the harness after each update; ``wall_time`` — seconds of training (evaluation and
  checkpointing are excluded), accumulated across resumed sessions.

``total_tokens`` (prefill + generated) and ``verifier_calls`` (outcome + step) are sums. A run stops when the
counter on ``budget.axis`` reaches ``budget.limit`` (`Budget.exhausted`); the counters are saved in every checkpoint,
so a resumed run continues from the spend it had.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["AXES", "COUNTED", "Budget", "BudgetAxis"]

# The counters a metered resource adds to (integers, summed over processes under `accelerate launch`).
COUNTED = ("generated_tokens", "prefill_tokens", "outcome_verifier_calls", "step_verifier_calls", "prompts")
BudgetAxis = Literal[
    "generated_tokens",
    "prefill_tokens",
    "total_tokens",
    "verifier_calls",
    "outcome_verifier_calls",
    "step_verifier_calls",
    "prompts",
    "optimizer_steps",
    "wall_time",
]
AXES: tuple[str, ...] = BudgetAxis.__args__  # type: ignore[attr-defined]
_STATE = (*COUNTED, "optimizer_steps")


@dataclass
class Budget:
    """Counters of what a run has spent (module docstring). ``wall_time`` accumulates across resumed sessions."""

    generated_tokens: int = 0
    prefill_tokens: int = 0
    outcome_verifier_calls: int = 0
    step_verifier_calls: int = 0
    prompts: int = 0
    optimizer_steps: int = 0
    wall_time: float = 0.0
    _session_start: float = field(default_factory=time.perf_counter, repr=False, compare=False)
    _wall_at_start: float = field(default=0.0, repr=False, compare=False)

    # --- counting (the metered resources call this; arms never do) ---------------------------------------------
    def charge(self, **amounts: int) -> None:
        """Add ``amounts`` (``generated_tokens=12, prefill_tokens=40, ...``) to the counters of `COUNTED`."""
        for name, n in amounts.items():
            if name not in COUNTED:
                raise ValueError(f"cannot charge {name!r}: a metered resource charges one of {COUNTED}")
            setattr(self, name, getattr(self, name) + int(n))

    def tick(self) -> None:
        """Bring ``wall_time`` up to date (called before reading or saving the counters)."""
        self.wall_time = self._wall_at_start + (time.perf_counter() - self._session_start)

    # --- reading --------------------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.generated_tokens + self.prefill_tokens

    @property
    def verifier_calls(self) -> int:
        return self.outcome_verifier_calls + self.step_verifier_calls

    def value(self, axis: str) -> float:
        """The spend on ``axis`` (one of `AXES`)."""
        if axis not in AXES:
            raise ValueError(f"unknown budget axis {axis!r}; choose one of {', '.join(AXES)}")
        self.tick()
        return float(getattr(self, axis))

    def exhausted(self, cfg: Any) -> bool:
        """Whether the spend on ``cfg.axis`` reached ``cfg.limit`` (``cfg``: a `llm_rl.config.BudgetConfig`)."""
        return self.value(cfg.axis) >= cfg.limit

    def as_dict(self) -> dict[str, float]:
        """Every counter and both sums, for metrics records."""
        self.tick()
        return {
            **{name: getattr(self, name) for name in _STATE},
            "wall_time": self.wall_time,
            "total_tokens": self.total_tokens,
            "verifier_calls": self.verifier_calls,
        }

    # --- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.tick()
        return {**{name: getattr(self, name) for name in _STATE}, "wall_time": self.wall_time}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore saved counters *into this object* (so everything holding it sees the resumed spend)."""
        for name in _STATE:
            setattr(self, name, int(state[name]))
        self.wall_time = self._wall_at_start = float(state["wall_time"])
        self._session_start = time.perf_counter()

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

    def add_wall_time(self, seconds: float) -> None:
        """Shift ``wall_time`` by ``seconds`` (the multi-process sync sets every process to the slowest one)."""
        self._wall_at_start += seconds
        self.tick()
