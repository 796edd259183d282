"""Containment: raising, hanging, NaN, out-of-range and junk-returning verifiers score 0, are counted, never crash.

The broken verifiers live at module level so the spawned worker process can unpickle them.
"""

from __future__ import annotations

import math
import os
import time

import pytest

import verifiers
from verifiers import ContainedVerifier, Verifier, safe_score
from verifiers.containment import close_workers


class Raising(Verifier):
    name = "raising"

    def score(self, completion, example):
        raise RuntimeError("verifier bug")


class Exiting(Verifier):
    name = "exiting"

    def score(self, completion, example):
        raise SystemExit(0)


class Hanging(Verifier):
    """Hangs on 'hang', otherwise scores 1 (so a restarted worker is visible)."""

    name = "hanging"

    def score(self, completion, example):
        if completion == "hang":
            time.sleep(60)
        return 1.0


class Crashing(Verifier):
    name = "crashing"

    def score(self, completion, example):
        os._exit(3)


class Returning(Verifier):
    """Returns ``example["value"]`` as the score."""

    name = "returning"

    def score(self, completion, example):
        return example["value"]


class MemoryBomb(Verifier):
    name = "memory_bomb"

    def score(self, completion, example):
        return float(len(bytearray(1536 * 2**20)) > 0)  # 1.5 GiB: fits the machine, not the limit


class BadStep(Verifier):
    name = "bad_step"

    def score(self, completion, example):
        return 0.0

    def check_step(self, previous_steps, step, example):
        if step == "raise":
            raise ValueError("step bug")
        return "yes"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (math.nan, "nan"),
        (1.5, "out_of_range"),
        (-0.1, "out_of_range"),
        (math.inf, "out_of_range"),
        ("1", "not_a_number"),
        (None, "not_a_number"),
    ],
)
def test_bad_return_values_in_process(value, kind):
    outcome = safe_score(Returning(), "x", {"value": value})
    assert (outcome.score, outcome.failure) == (0.0, kind)


def test_good_values_pass_through():
    assert safe_score(Returning(), "x", {"value": 0.25}).score == 0.25
    assert safe_score(Returning(), "x", {"value": True}) == verifiers.ScoreOutcome(1.0)


def test_raising_and_exiting_are_contained_and_counted(caplog):
    for broken in (Raising(), Exiting()):
        contained = ContainedVerifier(broken, timeout=None)
        assert [contained.score("x", {}) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert contained.stats.as_dict() == {"calls": 3, "failures": 3, "failures/exception": 3}
    assert "verifier 'raising' score failed (exception" in caplog.text


def test_step_check_failures_are_contained():
    contained = ContainedVerifier(BadStep(), timeout=None)
    assert contained.check_step([], "raise", {}) is None
    assert contained.check_step([], "ok", {}) is None  # "yes" is not a bool
    stats = contained.stats.as_dict()
    assert stats["step_checks"] == 2
    assert stats["step_failures/exception"] == 1 and stats["step_failures/not_a_bool"] == 1


def test_hanging_verifier_times_out_in_a_worker_and_recovers():
    with ContainedVerifier(Hanging(), timeout=1.0) as contained:
        assert contained.score("fine", {}) == 1.0  # worker started (startup is not charged to the deadline)
        start = time.monotonic()
        outcome = contained.score_outcome("hang", {})
        assert outcome.failure == "timeout" and outcome.score == 0.0
        assert time.monotonic() - start < 5.0
        assert contained.score("fine", {}) == 1.0  # a fresh worker replaced the killed one
        assert contained.stats.as_dict() == {"calls": 3, "failures": 1, "failures/timeout": 1}


def test_worker_crash_and_bad_values_are_contained():
    with ContainedVerifier(Crashing(), timeout=2.0) as contained:
        assert contained.score("x", {}) == 0.0
        assert contained.stats.as_dict()["failures/worker_died"] == 1
    with ContainedVerifier(Returning(), timeout=2.0) as contained:
        scores = [contained.score("x", {"value": v}) for v in (math.nan, 2.0, "junk", 0.5)]
        assert scores == [0.0, 0.0, 0.0, 0.5]
        stats = contained.stats.as_dict()
        assert stats["failures/nan"] == 1 and stats["failures/out_of_range"] == 1
        assert stats["failures/not_a_number"] == 1 and stats["failures"] == 3


def test_memory_bomb_in_a_worker_is_contained():
    with ContainedVerifier(MemoryBomb(), timeout=5.0, memory_limit_bytes=768 * 2**20) as contained:
        assert contained.score("x", {}) == 0.0
        assert contained.stats.as_dict()["failures/exception"] == 1


def test_safe_score_with_timeout_uses_a_process():
    hanging = Hanging()
    assert safe_score(hanging, "hang", {}, timeout=1.0).failure == "timeout"
    assert safe_score(hanging, "fine", {}, timeout=5.0).score == 1.0
    close_workers()


def test_auto_timeout_follows_trust():
    assert ContainedVerifier(verifiers.load("chain_arithmetic")).timeout is None
    assert ContainedVerifier(verifiers.load("reverse_string")).timeout == verifiers.DEFAULT_TIMEOUT
    with pytest.raises(ValueError, match="timeout must be"):
        ContainedVerifier(Raising(), timeout=-1)


def test_fast_path_scores_thousands_per_second():
    chain = verifiers.load("chain_arithmetic")
    rows = chain.generate(50, seed=0).to_list()
    contained = ContainedVerifier(chain)
    start = time.perf_counter()
    scores = [contained.score(row["solution"], row) for _ in range(40) for row in rows]
    rate = len(scores) / (time.perf_counter() - start)
    assert sum(scores) == len(scores)
    assert rate > 5000, f"only {rate:.0f} samples/s in-process"
