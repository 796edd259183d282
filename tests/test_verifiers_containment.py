"""Containment: raising, hanging, NaN, out-of-range and junk-returning verifiers score 0, are counted, never crash.

The attacks of issue 15 (a plugin forking per call, printing megabytes, killing its parent, returning a Real
whose ``float()`` raises, hanging while declaring trust) run against real processes: a caller is started as a
separate process with piped stdout/stderr, as in a shell pipeline.

The broken verifiers live at module level so the spawned worker process can unpickle them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
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
    chain = ContainedVerifier(verifiers.load("chain_arithmetic"))
    assert (chain.in_process, chain.timeout) == (
        True,
        verifiers.DEFAULT_TIMEOUT,
    )  # trusted: no hop, a deadline
    plugin = ContainedVerifier(verifiers.load("reverse_string"))
    assert (plugin.in_process, plugin.timeout) == (False, verifiers.DEFAULT_TIMEOUT)
    assert (
        ContainedVerifier(verifiers.load("python_code")).timeout
        > verifiers.load("python_code").limits.wall_seconds
    )
    assert ContainedVerifier(Raising(), timeout=None).timeout is None  # the explicit opt-out
    for bad in (-1, 0, float("inf"), "soon"):
        with pytest.raises(ValueError, match="timeout must be"):
            ContainedVerifier(Raising(), timeout=bad)


def test_fast_path_scores_thousands_per_second():
    chain = verifiers.load("chain_arithmetic")
    rows = chain.generate(50, seed=0).to_list()
    contained = ContainedVerifier(chain)
    start = time.perf_counter()
    scores = [contained.score(row["solution"], row) for _ in range(40) for row in rows]
    rate = len(scores) / (time.perf_counter() - start)
    assert sum(scores) == len(scores)
    assert rate > 5000, f"only {rate:.0f} samples/s in-process"


# --- issue 15: plugins that attack their container ---------------------------------------------------------


class BadFloat(float):
    """A ``numbers.Real`` whose ``float()`` raises."""

    def __float__(self):
        raise RuntimeError("no float for you")


class BadReal(Verifier):
    name = "bad_real"

    def score(self, completion, example):
        return BadFloat(0.5)


class TrustedBadReal(BadReal):
    trusted = True


class TrustedHanging(Verifier):
    """Declares trust, then runs for ``example["seconds"]`` (bounded, so a missing deadline fails the test
    instead of hanging it); ``example["how"]`` is ``sleep``, ``spin`` or ``swallow`` (catches the deadline)."""

    name = "trusted_hanging"
    trusted = True
    deadline = 0.3

    def score(self, completion, example):
        end = time.monotonic() + example.get("seconds", 0)
        while time.monotonic() < end:
            try:
                if example["how"] == "sleep":
                    time.sleep(end - time.monotonic())
            except BaseException:
                if example["how"] != "swallow":
                    raise
        return 1.0


def test_a_real_whose_float_raises_is_a_failure_not_a_crash():
    for contained in (
        ContainedVerifier(BadReal(), timeout=None),
        ContainedVerifier(TrustedBadReal()),
        ContainedVerifier(BadReal(), timeout=5.0),
    ):
        with contained:
            outcome = contained.score_outcome("x", {})
        assert (outcome.score, outcome.failure) == (0.0, "not_a_number"), contained
        assert "RuntimeError" in outcome.detail
    assert verifiers.containment.validate_score(BadFloat(0.5)).failure == "not_a_number"


@pytest.mark.parametrize("how", ["sleep", "spin", "swallow"])
def test_a_trusted_verifier_that_hangs_still_gets_a_deadline(how):
    contained = ContainedVerifier(TrustedHanging())
    assert contained.score("x", {"how": how}) == 1.0  # quick: no deadline hit
    start = time.monotonic()
    outcome = contained.score_outcome("x", {"how": how, "seconds": 1.5 if how == "swallow" else 8})
    assert outcome.failure == "timeout" and outcome.score == 0.0, outcome
    assert time.monotonic() - start < 2.5
    assert contained.score("x", {"how": how}) == 1.0  # and it keeps working


def test_a_trusted_verifier_called_from_a_thread_gets_its_deadline_in_a_worker():
    outcomes = []
    with ContainedVerifier(TrustedHanging()) as contained:
        thread = threading.Thread(
            target=lambda: outcomes.append(contained.score_outcome("x", {"how": "spin", "seconds": 8}))
        )
        thread.start()
        thread.join(timeout=60)
    assert outcomes and outcomes[0].failure == "timeout"


def test_the_deadline_leaves_sigalrm_alone_and_another_handler_of_its_signal_too():
    from verifiers.deadline import DEADLINE_SIGNAL

    alarms = []
    previous_alarm = signal.signal(signal.SIGALRM, lambda *_: alarms.append(1))  # pytest-timeout's signal
    try:
        contained = ContainedVerifier(TrustedHanging())
        assert contained.score_outcome("x", {"how": "sleep", "seconds": 8}).failure == "timeout"
        signal.raise_signal(signal.SIGALRM)
        assert alarms == [1]
    finally:
        signal.signal(signal.SIGALRM, previous_alarm)
    theirs = []
    previous = signal.signal(DEADLINE_SIGNAL, lambda *_: theirs.append(1))
    try:
        with ContainedVerifier(TrustedHanging()) as contained:
            assert contained.score_outcome("x", {"how": "spin", "seconds": 8}).failure == "timeout"
            assert contained._worker is not None  # enforced in a worker instead
        signal.raise_signal(DEADLINE_SIGNAL)
        assert theirs == [1]
    finally:
        signal.signal(DEADLINE_SIGNAL, previous)


def test_llm_rl_verify_does_not_hang_on_a_trusted_plugin(tmp_path, capsys):
    from verifiers.cli import cmd_verify

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"completion": "x", "how": "spin", "seconds": 8}\n{"completion": "y", "how": "spin"}\n')
    start = time.monotonic()
    assert cmd_verify(["--verifier", f"{__name__}:TrustedHanging", "--input", str(rows), "--quiet"]) == 0
    assert time.monotonic() - start < 5.0
    assert '"failures": {"timeout": 1}' in capsys.readouterr().out


_PLUGINS = '''
import os, subprocess, sys, time
from verifiers import Verifier

class Forking(Verifier):
    """Starts a child per call and never waits for it (it inherits stdout, as subprocess children do)."""
    name = "forking"
    def score(self, completion, example):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)", os.environ["MARKER"]])
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(20)", os.environ["MARKER"]])
        return 1.0

class Chatty(Verifier):
    """Prints 4 MB per call, to stdout and to stderr."""
    name = "chatty"
    def score(self, completion, example):
        print("x" * 2**22)
        sys.stderr.write("y" * 2**22)
        return 1.0

class ParentKiller(Verifier):
    name = "parent_killer"
    def score(self, completion, example):
        if completion == "kill":
            os.kill(os.getppid(), 9)
            time.sleep(5)
        return 1.0
'''

_CALLER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import plugins
from verifiers import ContainedVerifier
with ContainedVerifier(getattr(plugins, sys.argv[2])(), timeout=10.0) as contained:
    scores = [contained.score(c, {}) for c in sys.argv[3:]]
    extra = {"output_bytes": getattr(contained, "output_bytes", None), "kept": len(getattr(contained, "output", ""))}
print("RESULT " + json.dumps({"scores": scores, "stats": contained.stats.as_dict(), **extra}), flush=True)
"""


def _run_caller(
    tmp_path, plugin: str, *completions: str, marker: str = ""
) -> tuple[int, bytes, bytes, float]:
    """Run a caller of ``plugin`` as a separate process with piped stdout/stderr, like a shell pipeline.

    Returns (exit code, stdout, stderr, seconds until both pipes closed); a pipe still held open by a leftover
    process shows as a timeout (60 s, reported as seconds=inf).
    """
    (tmp_path / "plugins.py").write_text(_PLUGINS)
    env = {**os.environ, "MARKER": marker or "unused"}
    command = [sys.executable, "-c", _CALLER, str(tmp_path), plugin, *completions]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = process.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return process.returncode, out, err, math.inf
    return process.returncode, out, err, time.monotonic() - start


def _result(stdout: bytes) -> dict:
    line = next(line for line in stdout.decode().splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_a_plugin_that_forks_per_call_leaves_nothing_behind(tmp_path):
    marker = f"relabel-plugin-child-{secrets.token_hex(6)}"
    try:
        code, out, err, seconds = _run_caller(tmp_path, "Forking", "a", "b", "c", marker=marker)
        assert seconds < 12, "a leftover process kept the caller's stdout/stderr open: the pipeline hung"
        assert code == 0 and _result(out)["scores"] == [1.0, 1.0, 1.0], err[-2000:]
        time.sleep(0.2)
        assert _processes_with(marker) == [], "the plugin's children outlived its calls"
    finally:
        for pid in _processes_with(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


def test_a_plugins_output_is_capped_and_diverted(tmp_path):
    code, out, err, _ = _run_caller(tmp_path, "Chatty", "a", "b")
    assert code == 0, err[-2000:]
    assert len(out) < 10_000 and len(err) < 10_000, f"{len(out)} bytes on stdout, {len(err)} on stderr"
    result = _result(out)
    assert result["scores"] == [1.0, 1.0]
    assert result["output_bytes"] >= 4 * 2**22 and result["kept"] <= 64 * 1024


def test_a_plugin_killing_its_parent_does_not_kill_the_run(tmp_path):
    code, out, err, _ = _run_caller(tmp_path, "ParentKiller", "kill", "fine")
    assert code == 0, f"the caller died (exit code {code}): {err[-2000:]!r}"
    result = _result(out)
    assert result["scores"] == [0.0, 1.0]
    assert result["stats"]["failures/worker_died"] == 1
