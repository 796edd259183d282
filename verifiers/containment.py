"""Containment: a broken verifier scores 0 for that sample, is counted and logged by name, and never crashes a run.

Failure kinds (the keys of :meth:`VerifierStats.as_dict`):

* ``exception``: ``score`` raised (``SystemExit`` included);
* ``timeout``: it ran past its deadline;
* ``worker_died``: the worker process crashed (segfault, ``os._exit``, OOM kill, its parent killed) or the verifier
  could not be sent to it (unpicklable);
* ``not_a_number``, ``nan``, ``out_of_range``: it returned something that is not a float in [0, 1] (including a
  ``numbers.Real`` whose ``float()`` raises).

Every call has a deadline; trust decides only *where* a call runs:

* **in-process** (``trusted`` verifiers, the fast path): ``try/except`` plus a deadline enforced by a watchdog
  thread and a signal (:mod:`verifiers.deadline`; ~0.3 µs a call) that raises ``DeadlineExceeded`` in the verifier.
  It reaches Python code and blocking system calls, not a C extension that never returns to the interpreter, and a
  verifier that catches ``BaseException`` in a loop can still hang: trust is for bounded Python. Only the main
  thread can be interrupted; elsewhere the call goes to a worker process instead.
* **worker process** (everything else): a persistent ``spawn``-ed worker per verifier (address space capped, 4 GiB
  by default), fed one call at a time through a pipe with a deadline; past it the worker is SIGKILLed and
  restarted lazily on the next call. Processes a call leaves behind are killed after it, the worker's
  stdout/stderr are diverted (the first :data:`OUTPUT_KEEP_BYTES` kept in ``ContainedVerifier.output``, the
  rest counted and dropped), and its parent is a keeper process, not the caller: see
  :mod:`verifiers.containment_worker`.

:class:`ContainedVerifier` (``timeout="auto"``) runs ``trusted`` verifiers in-process and the others in a worker,
both with the verifier's declared ``deadline`` or :data:`DEFAULT_TIMEOUT`; a number is a worker with that
deadline; ``None`` is in-process with *no* deadline (an explicit opt-out for code you wrote).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from verifiers import deadline
from verifiers.base import Verifier
from verifiers.containment_worker import describe, keeper_main, to_score, to_step_check

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_WORKER_MEMORY",
    "ContainedVerifier",
    "ScoreOutcome",
    "VerifierStats",
    "close_workers",
    "safe_score",
    "validate_score",
]

DEFAULT_TIMEOUT = 5.0  # seconds per call, unless the verifier declares its own ``deadline``
MAX_DECLARED_DEADLINE = 600.0  # a verifier's declared deadline is capped here (a number for timeout= is not)
DEFAULT_WORKER_MEMORY = 4 * 2**30  # RLIMIT_AS of a worker process: a memory bomb raises MemoryError there
WORKER_START_TIMEOUT = 120.0  # seconds for a spawned worker to import its verifier (not charged to a call)
MAX_FAILED_STARTS = 3  # a verifier that cannot even load in a worker fails fast after this many tries
OUTPUT_KEEP_BYTES = 64 * 1024  # of a verifier's worker output, kept for inspection; the rest is counted only
_LOG_FIRST = 3  # log the first few failures of each kind per verifier, then every _LOG_EVERY-th
_LOG_EVERY = 1000

logger = logging.getLogger("verifiers")


@dataclass(frozen=True)
class ScoreOutcome:
    """One contained score.

    Attributes:
      score: the reward used, in [0, 1]; 0.0 whenever ``failure`` is set.
      failure: None, or the failure kind (see the module docstring).
      detail: a short human-readable reason for the failure ('' when none).
    """

    score: float
    failure: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None


def validate_score(value: Any) -> ScoreOutcome:
    """Turn a verifier's raw return value into an outcome (never raises, whatever ``value`` does)."""
    status, score = to_score(value)
    if status != "ok":
        return ScoreOutcome(0.0, status, score)
    return _check_range(score)


def _check_range(score: float) -> ScoreOutcome:
    if math.isnan(score):
        return ScoreOutcome(0.0, "nan", "returned NaN")
    if not 0.0 <= score <= 1.0:
        return ScoreOutcome(0.0, "out_of_range", f"returned {score!r}, outside [0, 1]")
    return ScoreOutcome(score)


_CONVERT = {"score": to_score, "check_step": to_step_check}


# --- in-process calls ------------------------------------------------------------------------------------


def _call_in_process(verifier: Verifier, method: str, args: tuple, seconds: float | None) -> tuple | None:
    """(status, value) of one in-process call; None when a deadline was asked for but cannot be enforced here
    (not the main thread: see :mod:`verifiers.deadline`)."""
    convert = _CONVERT[method]

    def call() -> tuple[str, Any]:
        try:
            return convert(
                getattr(verifier, method)(*args)
            )  # float() of the result runs under the deadline too
        except (Exception, SystemExit) as error:
            return "exception", describe(error)

    if seconds is None:
        return call()
    if not deadline.available():
        return None
    timed_out, outcome = deadline.run(call, seconds)
    if timed_out:  # even if the verifier swallowed the interruption and answered late
        return "timeout", f"no answer within {seconds:g}s (in-process deadline)"
    return outcome


# --- the worker process -----------------------------------------------------------------------------------


class _Output:
    """What a verifier's worker wrote to stdout/stderr: counted, the first OUTPUT_KEEP_BYTES kept, never shown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kept = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        if not self.total:
            logger.warning(
                "verifier %r writes to stdout/stderr in its worker process; diverted (the first %d bytes are "
                "kept in ContainedVerifier.output), never passed to this process's stdout/stderr",
                self.name,
                OUTPUT_KEEP_BYTES,
            )
        self.total += len(data)
        room = OUTPUT_KEEP_BYTES - len(self.kept)
        if room > 0:
            self.kept += data[:room]


class _Worker:
    """A persistent worker holding one verifier (see :mod:`verifiers.containment_worker`); killed on a missed
    deadline, restarted on demand."""

    def __init__(self, verifier: Verifier, memory_limit_bytes: int | None, output: _Output) -> None:
        self._verifier = verifier
        self._memory_limit_bytes = memory_limit_bytes
        self._output = output
        self._process: Any = None  # the keeper
        self._conn: Any = None
        self._out_fd = -1  # read end of the worker's stdout/stderr
        self._poller: Any = None  # polls the reply connection and the output pipe
        self._pid: int | None = None  # the worker proper
        self._failed_starts = 0  # consecutive; after MAX_FAILED_STARTS the worker stops respawning

    def _start(self) -> str | None:
        try:
            payload = pickle.dumps(self._verifier)
        except Exception as error:
            return f"cannot send the verifier to a worker: {describe(error)}"
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        read_fd, write_fd = os.pipe()
        writer = multiprocessing.connection.Connection(write_fd, readable=False)
        process = ctx.Process(
            target=keeper_main,
            args=(child, writer, payload, self._memory_limit_bytes),
            daemon=True,
            name=f"verifier-worker-{self._output.name}",
        )
        try:
            process.start()
        except Exception as error:  # no resources to spawn
            parent.close()
            os.close(read_fd)
            return f"cannot start worker: {describe(error)}"
        finally:
            child.close()
            writer.close()
        os.set_blocking(read_fd, False)
        self._process, self._conn, self._out_fd = process, parent, read_fd
        self._poller = select.poll()
        self._poller.register(parent.fileno(), select.POLLIN)
        self._poller.register(read_fd, select.POLLIN)
        if not self._wait(WORKER_START_TIMEOUT):
            self.close()
            return f"worker did not start within {WORKER_START_TIMEOUT:.0f}s"
        try:
            status, value = parent.recv()
        except (EOFError, OSError):
            self.close()
            return "worker died while loading the verifier"
        if status != "ready":
            self.close()
            return str(value)
        self._pid = value
        return None

    def _drain(self) -> None:
        """Read what the worker wrote so far (it would block on a full pipe otherwise)."""
        while self._out_fd >= 0:
            try:
                data = os.read(self._out_fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer is gone
                self._poller.unregister(self._out_fd)
                os.close(self._out_fd)
                self._out_fd = -1
                return
            self._output.feed(data)

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a reply, draining the worker's output meanwhile."""
        end = time.monotonic() + timeout
        conn_fd = self._conn.fileno()
        while True:
            remaining = end - time.monotonic()
            events = dict(self._poller.poll(max(0.0, remaining) * 1000))
            if self._out_fd in events:
                self._drain()
            if conn_fd in events:
                return True
            if remaining <= 0:
                return False

    def call(self, method: str, args: tuple, timeout: float) -> tuple[str, Any]:
        if self._process is None or not self._process.is_alive():
            self.close()
            if self._failed_starts >= MAX_FAILED_STARTS:
                return (
                    "worker_died",
                    f"worker failed to start {MAX_FAILED_STARTS} times in a row; not retrying",
                )
            error = self._start()
            if error is not None:
                self._failed_starts += 1
                return "worker_died", error
            self._failed_starts = 0
        try:
            self._conn.send((method, args))
            if not self._wait(timeout):
                self.close()
                return "timeout", f"no answer within {timeout:g}s; worker killed"
            status, value = self._conn.recv()
            self._drain()
            return status, value
        except (EOFError, OSError) as error:
            self.close()
            return (
                "worker_died",
                f"worker died ({type(error).__name__}): a crash, os._exit, or its parent killed",
            )
        except Exception as error:  # e.g. unpicklable arguments
            return "exception", describe(error)

    def close(self) -> None:
        """Kill the worker, let the keeper kill what it left and exit, then the keeper's whole session."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._pid, signal.SIGKILL)
            self._pid = None
        if self._process is not None:
            self._process.join(timeout=2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=2)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)  # stragglers of a keeper that was killed
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._out_fd >= 0:
            self._drain()
            if self._out_fd >= 0:
                os.close(self._out_fd)
                self._out_fd = -1


# --- statistics --------------------------------------------------------------------------------------------


class VerifierStats:
    """Calls and failures of one verifier, by kind; ``as_dict()`` is flat, ready for metrics.jsonl."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: Counter[str] = Counter()  # method -> calls
        self.failures: Counter[str] = Counter()  # "method/kind" -> count
        self._lock = threading.Lock()

    def record(self, method: str, failure: str | None, detail: str = "") -> None:
        with self._lock:
            self.calls[method] += 1
            if failure is None:
                return
            key = f"{method}/{failure}"
            self.failures[key] += 1
            count = self.failures[key]
        if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
            logger.warning("verifier %r %s failed (%s, #%d): %s", self.name, method, failure, count, detail)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            out = {
                "calls": self.calls["score"],
                "failures": sum(v for k, v in self.failures.items() if k.startswith("score/")),
            }
            out.update(
                {
                    f"failures/{k.split('/', 1)[1]}": v
                    for k, v in self.failures.items()
                    if k.startswith("score/")
                }
            )
            if self.calls["check_step"]:
                out["step_checks"] = self.calls["check_step"]
                out.update(
                    {
                        f"step_failures/{k.split('/', 1)[1]}": v
                        for k, v in self.failures.items()
                        if k.startswith("check_step/")
                    }
                )
            return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# --- the public wrappers -----------------------------------------------------------------------------------

_shared_workers: dict[int, tuple[Verifier, _Worker]] = {}  # id -> (the verifier, kept alive; its worker)
_shared_lock = threading.Lock()


def safe_score(
    verifier: Verifier, completion: str, example: dict, *, timeout: float | None = None
) -> ScoreOutcome:
    """Score one sample, containing every failure (see the module docstring).

    ``timeout=None`` scores in-process with no deadline (code you trust not to hang). A number scores in a
    persistent worker process kept per verifier instance, shared by all ``safe_score`` calls on it until
    :func:`close_workers` or exit; use :class:`ContainedVerifier` to own a worker's lifetime (and to count
    failures).
    """
    if timeout is None:
        status, value = _call_in_process(verifier, "score", (completion, example), None)
    else:
        with _shared_lock:
            entry = _shared_workers.get(id(verifier))
            if entry is None:
                worker = _Worker(verifier, DEFAULT_WORKER_MEMORY, _Output(verifier.name))
                entry = _shared_workers[id(verifier)] = (verifier, worker)
            status, value = entry[1].call("score", (completion, example), timeout)
    return _check_range(value) if status == "ok" else ScoreOutcome(0.0, status, str(value))


def close_workers() -> None:
    """Stop every worker process started by :func:`safe_score`."""
    with _shared_lock:
        for _, worker in _shared_workers.values():
            worker.close()
        _shared_workers.clear()


def _declared_deadline(verifier: Verifier) -> float:
    declared = verifier.deadline
    if declared is None:
        return DEFAULT_TIMEOUT
    if isinstance(declared, bool) or not isinstance(declared, (int, float)) or not declared > 0:
        raise ValueError(f"verifier {verifier.name!r} declares deadline={declared!r}; expected seconds > 0")
    return min(float(declared), MAX_DECLARED_DEADLINE)


class ContainedVerifier(Verifier):
    """A verifier wrapped so that it cannot crash, hang or poison a run; counts its failures in ``stats``.

    Args:
      verifier: the verifier to contain.
      timeout: ``"auto"`` (default): ``trusted`` verifiers in-process, the others in a worker process, both with
        the verifier's declared ``deadline`` (capped at :data:`MAX_DECLARED_DEADLINE`) or
        :data:`DEFAULT_TIMEOUT`. A number: seconds per call in a worker process. None: in-process, no deadline.
      memory_limit_bytes: address-space limit of the worker process (POSIX), None for none.

    Attributes:
      timeout: the deadline of one call in seconds (None: none); in_process: whether calls skip the worker.
      output: what the verifier's worker wrote to stdout/stderr (the first :data:`OUTPUT_KEEP_BYTES`);
      output_bytes: how much it wrote in all.

    It is itself a :class:`Verifier` (same name, steps, generator), so callers use it in place of the original.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        timeout: float | str | None = "auto",
        memory_limit_bytes: int | None = DEFAULT_WORKER_MEMORY,
    ) -> None:
        if isinstance(verifier, ContainedVerifier):
            verifier = verifier.inner
        if not isinstance(verifier, Verifier):
            raise TypeError(f"ContainedVerifier wraps a Verifier, got {verifier!r}")
        if timeout == "auto":
            deadline, in_process = _declared_deadline(verifier), verifier.trusted
        elif timeout is None:
            deadline, in_process = None, True
        elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < math.inf:
            deadline, in_process = float(timeout), False
        else:
            raise ValueError(f"timeout must be None, 'auto' or a positive number of seconds, got {timeout!r}")
        self.inner = verifier
        self.timeout: float | None = deadline
        self.in_process = in_process
        self.name = verifier.name
        self.step_delimiter = verifier.step_delimiter
        self.trusted = verifier.trusted
        self.memory_limit_bytes = memory_limit_bytes
        self.stats = VerifierStats(verifier.name)
        self._output = _Output(verifier.name)
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    @property
    def output(self) -> str:
        return self._output.kept.decode("utf-8", "replace")

    @property
    def output_bytes(self) -> int:
        return self._output.total

    def _call(self, method: str, args: tuple) -> tuple[str, Any]:
        if self.in_process:
            outcome = _call_in_process(self.inner, method, args, self.timeout)
            if outcome is not None:
                return outcome
            # no in-process deadline here (not the main thread, or SIGALRM taken): a worker enforces it
        with self._lock:
            if self._worker is None:
                self._worker = _Worker(self.inner, self.memory_limit_bytes, self._output)
            return self._worker.call(method, args, self.timeout or DEFAULT_TIMEOUT)

    def score_outcome(self, completion: str, example: dict) -> ScoreOutcome:
        status, value = self._call("score", (completion, example))
        outcome = _check_range(value) if status == "ok" else ScoreOutcome(0.0, status, str(value))
        self.stats.record("score", outcome.failure, outcome.detail)
        return outcome

    def score(self, completion: str, example: dict) -> float:
        return self.score_outcome(completion, example).score

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if not self.inner.has_step_checks:
            return None
        status, value = self._call("check_step", (list(previous_steps), step, example))
        self.stats.record(
            "check_step", None if status == "ok" else status, "" if status == "ok" else str(value)
        )
        return value if status == "ok" else None

    def split_steps(self, completion: str) -> list[str]:
        return self.inner.split_steps(completion)

    def is_terminal_step(self, step: str) -> bool:
        return self.inner.is_terminal_step(step)

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: Any):
        return self.inner.generate(n, seed=seed, split=split, **difficulty)

    @property
    def has_step_checks(self) -> bool:
        return self.inner.has_step_checks

    @property
    def has_generator(self) -> bool:
        return self.inner.has_generator

    def close(self) -> None:
        """Stop the worker process, if any (also done at garbage collection / interpreter exit)."""
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def __enter__(self) -> ContainedVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with contextlib.suppress(Exception):  # may run during interpreter shutdown
                worker.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_worker"] = None
        state["_output"] = _Output(self.name)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = "in-process" if self.in_process else "worker"
        return f"ContainedVerifier({self.inner!r}, timeout={self.timeout!r}, {where})"
