"""Containment: a broken verifier scores 0 for that sample, is counted and logged by name, and never crashes a run.

Failure kinds (the keys of :meth:`VerifierStats.as_dict`):

* ``exception``: ``score`` raised (``SystemExit`` included);
* ``timeout``: it ran past its deadline (process-level path only);
* ``worker_died``: the worker process crashed (segfault, ``os._exit``, OOM kill) or the verifier could not be
  sent to it (unpicklable);
* ``not_a_number``, ``nan``, ``out_of_range``: it returned something that is not a float in [0, 1].

Two paths, chosen per verifier (``timeout``):

* ``timeout=None`` — in-process, ``try/except`` plus the value check. This is the fast path (hundreds of thousands
  of chain-arithmetic scores per second); it cannot stop a hang, so it is for ``trusted`` built-ins whose
  scoring is bounded Python.
* ``timeout=<seconds>`` — a persistent worker process per verifier (address space capped, 4 GiB by default) (``multiprocessing`` *spawn*, so no forked
  torch/CUDA state), fed one call at a time through a pipe with a deadline. A call past its deadline gets the
  worker SIGKILLed and restarted lazily on the next call. Process-level, not ``signal.alarm``: alarms only work
  in the main thread, cannot interrupt C code holding the GIL, and a verifier can swallow the exception.

:class:`ContainedVerifier` picks ``None`` for ``verifier.trusted`` and :data:`DEFAULT_TIMEOUT` otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import numbers
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from verifiers.base import Verifier

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_WORKER_MEMORY",
    "ContainedVerifier",
    "ScoreOutcome",
    "VerifierStats",
    "close_workers",
    "safe_score",
]

DEFAULT_TIMEOUT = 5.0  # seconds per call for untrusted verifiers
DEFAULT_WORKER_MEMORY = 4 * 2**30  # RLIMIT_AS of a worker process: a memory bomb raises MemoryError there
WORKER_START_TIMEOUT = 120.0  # seconds for a spawned worker to import its verifier (not charged to a call)
MAX_FAILED_STARTS = 3  # a verifier that cannot even load in a worker fails fast after this many tries
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
    """Turn a verifier's raw return value into an outcome (the value check shared by both paths)."""
    if isinstance(value, bool):
        return ScoreOutcome(float(value))
    if not isinstance(value, numbers.Real):
        return ScoreOutcome(0.0, "not_a_number", f"returned {type(value).__name__}: {value!r:.80}")
    score = float(value)
    if math.isnan(score):
        return ScoreOutcome(0.0, "nan", "returned NaN")
    if not 0.0 <= score <= 1.0:
        return ScoreOutcome(0.0, "out_of_range", f"returned {score!r}, outside [0, 1]")
    return ScoreOutcome(score)


def _call_in_process(verifier: Verifier, method: str, args: tuple) -> tuple[str, Any]:
    try:
        return "ok", getattr(verifier, method)(*args)
    except (Exception, SystemExit) as error:
        return "exception", f"{type(error).__name__}: {error}"[:300]


# --- the worker process ------------------------------------------------------------------------------------


def _worker_main(conn: Any, verifier: Verifier, memory_limit_bytes: int | None) -> None:
    """Worker loop: answer (method, args) requests until the pipe closes."""
    if memory_limit_bytes is not None:
        with contextlib.suppress(ImportError, ValueError, OSError):  # POSIX only
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    conn.send(("ready", None))
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        status, value = _call_in_process(verifier, method, args)
        if status == "ok" and method == "score" and not isinstance(value, (bool, numbers.Real)):
            value = repr(value)[:80]  # keep the reply picklable; the parent reports it as not_a_number
        conn.send((status, value))


class _Worker:
    """A persistent spawned process holding one verifier; killed on a missed deadline, restarted on demand."""

    def __init__(self, verifier: Verifier, memory_limit_bytes: int | None = None) -> None:
        self._verifier = verifier
        self._memory_limit_bytes = memory_limit_bytes
        self._process: Any = None
        self._conn: Any = None
        self._failed_starts = 0  # consecutive; after MAX_FAILED_STARTS the worker stops respawning

    def _start(self) -> str | None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main,
            args=(child, self._verifier, self._memory_limit_bytes),
            daemon=True,
            name="verifier-worker",
        )
        try:
            process.start()
        except Exception as error:  # unpicklable verifier, no resources to spawn
            parent.close()
            child.close()
            return f"cannot start worker: {type(error).__name__}: {error}"[:300]
        child.close()
        self._process, self._conn = process, parent
        if not parent.poll(WORKER_START_TIMEOUT):
            self.close()
            return f"worker did not start within {WORKER_START_TIMEOUT:.0f}s"
        try:
            parent.recv()
        except (EOFError, OSError):
            self.close()
            return "worker died while loading the verifier"
        return None

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
            if not self._conn.poll(timeout):
                self.close()
                return "timeout", f"no answer within {timeout:g}s; worker killed"
            return self._conn.recv()
        except (EOFError, OSError) as error:
            exitcode = None
            if self._process is not None:
                self._process.join(timeout=1)
                exitcode = self._process.exitcode
            self.close()
            return "worker_died", f"worker died (exit code {exitcode}): {type(error).__name__}"
        except Exception as error:  # e.g. unpicklable arguments
            return "exception", f"{type(error).__name__}: {error}"[:300]

    def close(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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

    ``timeout=None`` scores in-process (trusted verifiers). A number scores in a persistent worker process kept
    per verifier instance, shared by all ``safe_score`` calls on it until :func:`close_workers` or exit; use
    :class:`ContainedVerifier` to own a worker's lifetime (and to count failures).
    """
    if timeout is None:
        status, value = _call_in_process(verifier, "score", (completion, example))
    else:
        with _shared_lock:
            entry = _shared_workers.get(id(verifier))
            if entry is None:
                entry = _shared_workers[id(verifier)] = (verifier, _Worker(verifier, DEFAULT_WORKER_MEMORY))
            status, value = entry[1].call("score", (completion, example), timeout)
    return validate_score(value) if status == "ok" else ScoreOutcome(0.0, status, str(value))


def close_workers() -> None:
    """Stop every worker process started by :func:`safe_score`."""
    with _shared_lock:
        for _, worker in _shared_workers.values():
            worker.close()
        _shared_workers.clear()


class ContainedVerifier(Verifier):
    """A verifier wrapped so that it cannot crash, hang or poison a run; counts its failures in ``stats``.

    Args:
      verifier: the verifier to contain.
      timeout: seconds per call in a worker process, or None for in-process scoring. Default ``"auto"``: None
        when ``verifier.trusted``, else :data:`DEFAULT_TIMEOUT`.
      memory_limit_bytes: address-space limit of the worker process (POSIX), None for none.

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
            timeout = None if verifier.trusted else DEFAULT_TIMEOUT
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be None, 'auto' or a positive number of seconds, got {timeout!r}")
        self.inner = verifier
        self.timeout: float | None = timeout  # type: ignore[assignment]
        self.name = verifier.name
        self.step_delimiter = verifier.step_delimiter
        self.trusted = verifier.trusted
        self.memory_limit_bytes = memory_limit_bytes
        self.stats = VerifierStats(verifier.name)
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    def _call(self, method: str, args: tuple) -> tuple[str, Any]:
        if self.timeout is None:
            return _call_in_process(self.inner, method, args)
        with self._lock:
            if self._worker is None:
                self._worker = _Worker(self.inner, self.memory_limit_bytes)
            return self._worker.call(method, args, self.timeout)

    def score_outcome(self, completion: str, example: dict) -> ScoreOutcome:
        status, value = self._call("score", (completion, example))
        outcome = validate_score(value) if status == "ok" else ScoreOutcome(0.0, status, str(value))
        self.stats.record("score", outcome.failure, outcome.detail)
        return outcome

    def score(self, completion: str, example: dict) -> float:
        return self.score_outcome(completion, example).score

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if not self.inner.has_step_checks:
            return None
        status, value = self._call("check_step", (list(previous_steps), step, example))
        if status == "ok" and value is not None and not isinstance(value, bool):
            status, value = "not_a_bool", f"returned {value!r:.80}"
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
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContainedVerifier({self.inner!r}, timeout={self.timeout!r})"
