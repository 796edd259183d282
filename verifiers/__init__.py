"""Programmatic verifiers and task generators (the ground truth of every experiment).

Public API (see docs/verifiers.md): :class:`Verifier` (the contract: ``score``, optional ``check_step`` and
``make_example``), :func:`load` / :func:`available` / :func:`register` (the registry, built-ins and
``relabel_rl.verifiers`` entry-point plugins), :func:`safe_score`,
:class:`ContainedVerifier`, :class:`VerifierStats`, :class:`ScoreOutcome` (containment), :func:`reward_function`
(the TRL adapter) and ``verifiers.testing.check_verifier`` (the conformance kit).
"""

# Marks this package as relabel-rl's `verifiers` (PrimeIntellect's package has the same import name); read by
# relabel_rl.environment.foreign_verifiers without importing. Keep it a literal `= True` at the top level.
__relabel_rl__ = True

from verifiers.base import ANSWER_PREFIX, Verifier, final_answer, split_of
from verifiers.containment import DEFAULT_TIMEOUT, ContainedVerifier, ScoreOutcome, VerifierStats, safe_score
from verifiers.registry import VerifierInfo, VerifierRegistryError, available, describe, load, register
from verifiers.reward import completion_text, reward_function

__all__ = [
    "ANSWER_PREFIX",
    "DEFAULT_TIMEOUT",
    "ContainedVerifier",
    "ScoreOutcome",
    "Verifier",
    "VerifierInfo",
    "VerifierRegistryError",
    "VerifierStats",
    "available",
    "completion_text",
    "describe",
    "final_answer",
    "load",
    "register",
    "reward_function",
    "safe_score",
    "split_of",
]
