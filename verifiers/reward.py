"""TRL reward-function adapter: ``reward_function(verifier)`` -> ``f(prompts, completions, **columns)``.

TRL's ``GRPOTrainer`` calls each reward function with the batch's prompts and completions plus every other
dataset column as a keyword list (and a few extras such as ``trainer_state``), and logs it under ``__name__``.
Completions are plain strings, or, for conversational datasets, lists of ``{"role", "content"}`` messages (the
generated assistant turn). ``None`` in the returned list means "not applicable": we return it for rows whose
``verifier`` column names a different verifier, so several reward functions can share one mixed-task dataset.
When TRL passes its ``log_metric`` callback, the batch's verifier failure rate is logged as
``verifiers/<name>/failure_rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verifiers.base import Verifier
from verifiers.containment import ContainedVerifier

__all__ = ["completion_text", "reward_function"]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the content of the last assistant message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        if not assistant:
            return ""
        content = assistant[-1].get("content", "")
        if isinstance(content, list):  # multimodal-style parts: [{"type": "text", "text": ...}, ...]
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return "" if content is None else str(content)
    return "" if completion is None else str(completion)


def reward_function(
    verifier: Verifier, *, timeout: float | str | None = "auto"
) -> Callable[..., list[float | None]]:
    """A TRL reward function scoring with ``verifier``, contained (see :class:`ContainedVerifier`).

    The returned callable has ``__name__ == verifier.name`` and a ``stats`` attribute (:class:`VerifierStats`).
    """
    contained = (
        verifier if isinstance(verifier, ContainedVerifier) else ContainedVerifier(verifier, timeout=timeout)
    )

    def reward(prompts: list, completions: list, **columns: Any) -> list[float | None]:
        n = len(completions)
        row_columns = {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == n}
        rewards: list[float | None] = []
        failures = 0
        for i, completion in enumerate(completions):
            example = {k: v[i] for k, v in row_columns.items()}
            if prompts is not None and i < len(prompts):
                example.setdefault("prompt", prompts[i])
            if example.get("verifier") not in (None, contained.name):
                rewards.append(None)
                continue
            outcome = contained.score_outcome(completion_text(completion), example)
            failures += outcome.failure is not None
            rewards.append(outcome.score)
        log_metric = columns.get("log_metric")
        if callable(log_metric) and n:  # TRL >= 1.x: averaged per logging step beside kl/entropy
            log_metric(f"verifiers/{contained.name}/failure_rate", failures / n)
        return rewards

    reward.__name__ = reward.__qualname__ = contained.name
    reward.stats = contained.stats  # type: ignore[attr-defined]
    reward.verifier = contained  # type: ignore[attr-defined]
    return reward
