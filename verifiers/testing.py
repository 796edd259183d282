"""The conformance kit: ``check_verifier`` runs the contract's checks so a plugin author can test in one line.

    from verifiers.testing import check_verifier
    def test_my_verifier():
        check_verifier(MyVerifier())

Checks (each failure raises ``AssertionError`` naming the verifier, the check and the offending row):

* generation (when the verifier has a generator): the required columns with the right types; the same seed gives
  the same rows and a different seed different ones; example ``i`` is seeded by ``seed + i`` (a shorter run is a
  prefix); train and test prompts are disjoint;
* scoring: every gold ``solution`` scores 1; the empty completion and garbage score 0; scores are floats in [0, 1];
* steps: the gold solution's last step is terminal and no earlier one is; ``check_step`` accepts (True, or None =
  cannot tell) every gold step, and a verifier with step checks accepts at least one, rejects a garbage step,
  and rejects an accepted gold step with one digit changed;
* portability: the verifier pickles and scores identically in a ``spawn`` worker process (what
  :class:`verifiers.ContainedVerifier` and multi-process data loaders do).
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from verifiers.base import REQUIRED_COLUMNS, Verifier
from verifiers.registry import load

__all__ = ["GARBAGE_COMPLETIONS", "check_verifier"]

WORKER_TIMEOUT = 120.0  # seconds for the spawned worker to import and score

GARBAGE_COMPLETIONS = (
    "%%% ??? no answer here @@@",
    "Answer: banana",
    "Answer:",
    "Answer: 1/0 (((",
    "\x00\x01\xff garbage\n" * 3,
    "z" * 5000,
)


def _fail(verifier: Verifier, check: str, detail: str) -> AssertionError:
    return AssertionError(f"verifier {verifier.name!r} fails '{check}': {detail}")


def _score_all(verifier_bytes: bytes, completions: list[str], rows: list[dict]) -> list[float]:
    """Runs in the spawned worker: unpickle and score (module-level so spawn can import it)."""
    verifier = pickle.loads(verifier_bytes)
    return [float(verifier.score(c, r)) for c, r in zip(completions, rows)]


def _checked_score(verifier: Verifier, completion: str, row: dict) -> float:
    score = verifier.score(completion, row)
    if (
        isinstance(score, bool)
        or not isinstance(score, (int, float))
        or math.isnan(score)
        or not 0 <= score <= 1
    ):
        raise _fail(
            verifier, "score is a float in [0, 1]", f"score returned {score!r} for {completion[:60]!r}"
        )
    return float(score)


def _check_generation(verifier: Verifier, n: int, seed: int, difficulty: dict[str, Any]) -> list[dict]:
    train = verifier.generate(n, seed=seed, split="train", **difficulty)
    rows = train.to_list()
    if len(rows) != n:
        raise _fail(verifier, "generate returns n rows", f"asked for {n}, got {len(rows)}")
    for row in rows:
        for column, kind in REQUIRED_COLUMNS.items():
            if not isinstance(row.get(column), kind):
                raise _fail(
                    verifier, "required columns", f"column {column!r} is not a {kind.__name__}: {row!r}"
                )
    if verifier.generate(n, seed=seed, split="train", **difficulty).to_list() != rows:
        raise _fail(verifier, "deterministic generation", f"two calls with seed={seed} gave different rows")
    if n >= 2 and verifier.generate(n, seed=seed + 1000, split="train", **difficulty).to_list() == rows:
        raise _fail(
            verifier, "seed changes the data", f"seed={seed} and seed={seed + 1000} gave the same rows"
        )
    if (
        n >= 2
        and verifier.generate(n // 2, seed=seed, split="train", **difficulty).to_list() != rows[: n // 2]
    ):
        raise _fail(
            verifier, "example i is seeded by seed + i", "a shorter dataset is not a prefix of a longer one"
        )
    test_prompts = set(verifier.generate(n, seed=seed, split="test", **difficulty)["prompt"])
    test_prompts |= set(verifier.generate(n, seed=seed + 1, split="test", **difficulty)["prompt"])
    shared = test_prompts & {row["prompt"] for row in rows}
    if shared:
        raise _fail(
            verifier, "train/test disjoint", f"{len(shared)} prompts in both, e.g. {sorted(shared)[0]!r}"
        )
    return rows


def _check_steps(verifier: Verifier, rows: list[dict]) -> None:
    accepted = 0
    for row in rows:
        steps = verifier.split_steps(row["solution"])
        if not steps:
            raise _fail(verifier, "gold solution has steps", f"split_steps gave none for {row['solution']!r}")
        if not verifier.is_terminal_step(steps[-1]):
            raise _fail(
                verifier, "last gold step is terminal", f"{steps[-1]!r} is not recognised as the answer step"
            )
        for index, step in enumerate(steps):
            if index < len(steps) - 1 and verifier.is_terminal_step(step):
                raise _fail(verifier, "only the last step is terminal", f"step {index} {step!r} is terminal")
            verdict = verifier.check_step(steps[:index], step, row)
            if verdict not in (True, False, None):
                raise _fail(verifier, "check_step returns bool | None", f"got {verdict!r} for {step!r}")
            if verdict is False:
                raise _fail(
                    verifier,
                    "step checks accept gold steps",
                    f"step {index} {step!r} rejected after {steps[:index]!r}",
                )
            accepted += verdict is True
        if verifier.has_step_checks and verifier.check_step(steps[:1], "%%% garbage step", row) is True:
            raise _fail(verifier, "step checks reject garbage", "a garbage step was accepted")
        if verifier.has_step_checks:
            _check_corrupted_step(verifier, steps, row)
    if verifier.has_step_checks and rows and not accepted:
        raise _fail(
            verifier, "step checks can tell", "check_step is overridden but returned None for every gold step"
        )


def _check_corrupted_step(verifier: Verifier, steps: list[str], row: dict) -> None:
    """The first gold step that the verifier accepts must be rejected once its last digit is changed."""
    for index, step in enumerate(steps):
        digits = [i for i, c in enumerate(step) if c.isdigit()]
        if not digits or verifier.check_step(steps[:index], step, row) is not True:
            continue
        at = digits[-1]
        corrupted = step[:at] + str((int(step[at]) + 1) % 10) + step[at + 1 :]
        if verifier.check_step(steps[:index], corrupted, row) is True:
            raise _fail(
                verifier, "step checks reject a wrong step", f"{corrupted!r} (gold {step!r}) was accepted"
            )
        return


def check_verifier(
    verifier_or_name: Verifier | str,
    *,
    n: int = 8,
    seed: int = 0,
    examples: list[dict] | None = None,
    difficulty: dict[str, Any] | None = None,
    check_worker: bool = True,
) -> None:
    """Run the conformance checks on a verifier (instance or registry name); raise AssertionError on failure.

    Args:
      verifier_or_name: the verifier, or a name/``module:attr`` for :func:`verifiers.load`.
      n: rows to generate (and to score) per check.
      seed: the generation seed.
      examples: rows with a ``solution`` column to use instead of (or, with a generator, besides) generated rows;
        required for verifiers without a generator.
      difficulty: knobs passed to ``generate``.
      check_worker: also check pickling and scoring in a spawned process (about a second).
    """
    verifier = load(verifier_or_name) if isinstance(verifier_or_name, str) else verifier_or_name
    if not isinstance(verifier, Verifier):
        raise AssertionError(f"{verifier_or_name!r} is not a verifiers.Verifier")
    if not verifier.name:
        raise AssertionError(f"{type(verifier).__name__} has an empty `name`")
    rows = list(examples or [])
    if verifier.has_generator:
        rows = _check_generation(verifier, n, seed, difficulty or {}) + rows
    elif not rows:
        raise _fail(
            verifier, "has rows to check", "it has no generator: pass examples=[{... 'solution': ...}]"
        )
    for row in rows:
        if "solution" not in row:
            raise _fail(verifier, "rows carry a solution", f"row without a 'solution': {row!r}")
        gold = _checked_score(verifier, row["solution"], row)
        if gold != 1.0:
            raise _fail(verifier, "gold solution scores 1", f"scored {gold} on {row['solution']!r}")
        for bad in ("", *GARBAGE_COMPLETIONS):
            score = _checked_score(verifier, bad, row)
            if score != 0.0:
                raise _fail(
                    verifier, "empty/garbage scores 0", f"{bad[:40]!r} scored {score} on {row['prompt']!r}"
                )
    _check_steps(verifier, rows)
    if check_worker:
        _check_worker(verifier, rows)


def _check_worker(verifier: Verifier, rows: list[dict]) -> None:
    try:
        payload = pickle.dumps(verifier)
    except Exception as error:
        raise _fail(verifier, "pickles", f"{type(error).__name__}: {error}") from error
    completions = [row["solution"] for row in rows] + [GARBAGE_COMPLETIONS[0]] * len(rows)
    both = rows + rows
    local = [float(verifier.score(c, r)) for c, r in zip(completions, both)]
    # ProcessPoolExecutor, not Pool: a worker that cannot start raises BrokenProcessPool instead of respawning.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            remote = pool.submit(_score_all, payload, completions, both).result(timeout=WORKER_TIMEOUT)
        except Exception as error:
            raise _fail(verifier, "scores in a worker process", f"{type(error).__name__}: {error}") from error
    if remote != local:
        raise _fail(verifier, "scores the same in a worker process", f"local {local} != worker {remote}")
