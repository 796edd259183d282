"""The conformance kit: ``check_verifier`` runs the contract's checks so a plugin author can test in one line.

    from verifiers.testing import check_verifier
    def test_my_verifier():
        report = check_verifier(MyVerifier())   # prints what it checked
        assert "step checks reject a wrong step" in report.passed   # if you expect step checks

Checks (each failure raises ``AssertionError`` naming the verifier, the check and the offending row; on success
a :class:`ConformanceReport` lists every check that ran, with what it looked at, and every check that did not
apply, with why):

* generation (when the verifier has a generator): the required columns with the right types; the same seed gives
  the same rows and a different seed different ones; example ``i`` is seeded by ``seed + i`` (a shorter run is a
  prefix); train and test prompts are disjoint; prompts end with the step delimiter; with ``min_steps`` /
  ``max_steps`` knobs, a row drawn with both set to ``L`` has ``L`` steps before its answer line;
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
from dataclasses import dataclass, field
from typing import Any

from verifiers.base import LENGTH_KNOBS, REQUIRED_COLUMNS, Verifier
from verifiers.registry import load

__all__ = ["GARBAGE_COMPLETIONS", "ConformanceReport", "check_verifier"]

WORKER_TIMEOUT = 120.0  # seconds for the spawned worker to import and score

GARBAGE_COMPLETIONS = (
    "%%% ??? no answer here @@@",
    "Answer: banana",
    "Answer:",
    "Answer: 1/0 (((",
    "\x00\x01\xff garbage\n" * 3,
    "z" * 5000,
)


@dataclass
class ConformanceReport:
    """What :func:`check_verifier` checked. ``str(report)`` is the readable form it prints.

    Attributes:
      verifier: the verifier's name.
      rows: the rows every scoring and step check ran on (generated and given).
      passed: check name -> what it looked at, in the order run.
      skipped: check name -> why it did not apply.
      knobs: the difficulty knobs and their defaults (``Verifier.difficulty_knobs``).
    """

    verifier: str
    rows: int = 0
    passed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)

    def ok(self, check: str, detail: str) -> None:
        self.passed.setdefault(check, detail)  # a check run per row keeps its first detail

    def skip(self, check: str, why: str) -> None:
        self.skipped[check] = why

    def __str__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.knobs.items()) or "none"
        lines = [
            f"verifier {self.verifier!r} conforms: {len(self.passed)} checks passed on {self.rows} rows "
            f"(difficulty knobs: {knobs})"
        ]
        width = max(map(len, [*self.passed, *self.skipped]), default=0)
        lines += [f"  ok    {check:<{width}}  {detail}" for check, detail in self.passed.items()]
        lines += [f"  skip  {check:<{width}}  {why}" for check, why in self.skipped.items()]
        return "\n".join(lines)


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


def _check_generation(
    verifier: Verifier, n: int, seed: int, difficulty: dict[str, Any], report: ConformanceReport
) -> list[dict]:
    train = verifier.generate(n, seed=seed, split="train", **difficulty)
    rows = train.to_list()
    if len(rows) != n:
        raise _fail(verifier, "generate returns n rows", f"asked for {n}, got {len(rows)}")
    report.ok("generate returns n rows", f"n={n}, seed={seed}, difficulty={difficulty or 'defaults'}")
    for row in rows:
        for column, kind in REQUIRED_COLUMNS.items():
            if not isinstance(row.get(column), kind):
                raise _fail(
                    verifier, "required columns", f"column {column!r} is not a {kind.__name__}: {row!r}"
                )
    report.ok("required columns", ", ".join(f"{c}: {k.__name__}" for c, k in REQUIRED_COLUMNS.items()))
    if verifier.generate(n, seed=seed, split="train", **difficulty).to_list() != rows:
        raise _fail(verifier, "deterministic generation", f"two calls with seed={seed} gave different rows")
    report.ok("deterministic generation", f"two calls with seed={seed} gave the same {n} rows")
    if n < 2:
        report.skip("seed changes the data", f"needs n >= 2, got {n}")
        report.skip("example i is seeded by seed + i", f"needs n >= 2, got {n}")
    else:
        if verifier.generate(n, seed=seed + 1000, split="train", **difficulty).to_list() == rows:
            raise _fail(
                verifier, "seed changes the data", f"seed={seed} and seed={seed + 1000} gave the same rows"
            )
        report.ok("seed changes the data", f"seed={seed + 1000} gave other rows")
        if verifier.generate(n // 2, seed=seed, split="train", **difficulty).to_list() != rows[: n // 2]:
            raise _fail(
                verifier,
                "example i is seeded by seed + i",
                "a shorter dataset is not a prefix of a longer one",
            )
        report.ok("example i is seeded by seed + i", f"{n // 2} rows are a prefix of {n}")
    test_prompts = set(verifier.generate(n, seed=seed, split="test", **difficulty)["prompt"])
    test_prompts |= set(verifier.generate(n, seed=seed + 1, split="test", **difficulty)["prompt"])
    shared = test_prompts & {row["prompt"] for row in rows}
    if shared:
        raise _fail(
            verifier, "train/test disjoint", f"{len(shared)} prompts in both, e.g. {sorted(shared)[0]!r}"
        )
    report.ok("train/test disjoint", f"{n} train prompts vs {len(test_prompts)} test prompts (2 seeds)")
    delimiter = verifier.step_delimiter
    for row in rows:
        if not row["prompt"].endswith(delimiter):
            raise _fail(
                verifier,
                "prompts end with the step delimiter",
                f"{row['prompt'][-40:]!r} does not end with {delimiter!r}: the first step would continue the "
                "prompt's last line",
            )
    report.ok("prompts end with the step delimiter", f"{delimiter!r}")
    _check_length_knobs(verifier, n, seed, difficulty, report)
    return rows


def _check_length_knobs(
    verifier: Verifier, n: int, seed: int, difficulty: dict[str, Any], report: ConformanceReport
) -> None:
    """``min_steps = max_steps = L`` gives rows with L steps before the answer line (``num_steps == L + 1``)."""
    check = "min_steps/max_steps set the length"
    knobs = verifier.difficulty_knobs()
    if not set(LENGTH_KNOBS) <= set(knobs):
        report.skip(
            check, "no min_steps/max_steps knobs: the variance probe filters rows on num_steps instead"
        )
        return
    length = difficulty.get("min_steps", knobs["min_steps"])
    rows = verifier.generate(
        n, seed=seed, split="train", **{**difficulty, "min_steps": length, "max_steps": length}
    )
    wrong = [row["num_steps"] for row in rows if row["num_steps"] != length + 1]
    if wrong:
        raise _fail(
            verifier,
            check,
            f"min_steps = max_steps = {length} gave num_steps {wrong} (expected {length + 1})",
        )
    report.ok(check, f"min_steps = max_steps = {length} gave num_steps {length + 1} on {n} rows")


def _check_steps(verifier: Verifier, rows: list[dict], report: ConformanceReport) -> None:
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
            _check_corrupted_step(verifier, steps, row, report)
    report.ok("only the last gold step is terminal", f"{len(rows)} gold solutions")
    report.ok("check_step returns bool | None", f"every gold step of {len(rows)} rows")
    if not verifier.has_step_checks:
        report.skip("step checks", "check_step is not overridden (None: cannot tell)")
        return
    if rows and not accepted:
        raise _fail(
            verifier, "step checks can tell", "check_step is overridden but returned None for every gold step"
        )
    report.ok("step checks accept gold steps", f"{accepted} gold steps accepted, none rejected")
    report.ok("step checks reject garbage", f"a garbage step after the first gold step, {len(rows)} rows")


def _check_corrupted_step(verifier: Verifier, steps: list[str], row: dict, report: ConformanceReport) -> None:
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
        report.ok("step checks reject a wrong step", f"e.g. {corrupted!r} (gold {step!r})")
        return


def check_verifier(
    verifier_or_name: Verifier | str,
    *,
    n: int = 8,
    seed: int = 0,
    examples: list[dict] | None = None,
    difficulty: dict[str, Any] | None = None,
    check_worker: bool = True,
    verbose: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on a verifier (instance or registry name); raise AssertionError on failure.

    Args:
      verifier_or_name: the verifier, or a name/``module:attr`` for :func:`verifiers.load`.
      n: rows to generate (and to score) per check.
      seed: the generation seed.
      examples: rows with a ``solution`` column to use instead of (or, with a generator, besides) generated rows;
        required for verifiers without a generator.
      difficulty: knobs passed to ``generate``.
      check_worker: also check pickling and scoring in a spawned process (about a second).
      verbose: print the report (pytest shows it with ``-s`` or on failure of a later assertion).

    Returns:
      A :class:`ConformanceReport`: every check that passed (with what it looked at) and every check skipped.
    """
    verifier = load(verifier_or_name) if isinstance(verifier_or_name, str) else verifier_or_name
    if not isinstance(verifier, Verifier):
        raise AssertionError(f"{verifier_or_name!r} is not a verifiers.Verifier")
    if not verifier.name:
        raise AssertionError(f"{type(verifier).__name__} has an empty `name`")
    report = ConformanceReport(verifier.name, knobs=verifier.difficulty_knobs())
    rows = list(examples or [])
    if verifier.has_generator:
        rows = _check_generation(verifier, n, seed, difficulty or {}, report) + rows
    elif not rows:
        raise _fail(
            verifier, "has rows to check", "it has no generator: pass examples=[{... 'solution': ...}]"
        )
    else:
        report.skip("generation", "no generator: checked the given examples only")
    report.rows = len(rows)
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
    report.ok("gold solution scores 1", f"{len(rows)} rows")
    report.ok("empty/garbage scores 0", f"{1 + len(GARBAGE_COMPLETIONS)} completions x {len(rows)} rows")
    report.ok("score is a float in [0, 1]", f"{(2 + len(GARBAGE_COMPLETIONS)) * len(rows)} scores")
    _check_steps(verifier, rows, report)
    if check_worker:
        _check_worker(verifier, rows)
        report.ok(
            "pickles and scores the same in a worker process", f"{2 * len(rows)} scores in a spawn worker"
        )
    else:
        report.skip("worker process", "check_worker=False")
    if verbose:
        print(report)
    return report


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
