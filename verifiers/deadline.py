"""In-process deadlines: stop a call in the main thread after N seconds, for ~0.3 µs a call.

Used by :mod:`verifiers.containment` for ``trusted`` verifiers, which skip the worker process but not the deadline.

Why not ``signal.alarm``/``setitimer``: SIGALRM and the process's single real-time interval timer belong to
whoever takes them first (pytest-timeout does; so does any code calling ``signal.alarm``), and arming a timer is
two system calls per call. Why not a watchdog thread alone: an exception injected into another thread
(``PyThreadState_SetAsyncExc``) is only seen between bytecodes, never inside ``time.sleep`` or a blocking read.

How: :func:`run` stores the call's deadline (no system call); one daemon watchdog thread, started on first use,
sleeps until that deadline (every wake-up takes the GIL from the main thread, so it wakes rarely: at the deadline
of the call in flight, or every :data:`IDLE_POLL_SECONDS` when none runs) and, when the call in flight is
overdue, sends the main thread a real-time signal (``SIGRTMIN + 4``, which nothing else here uses) whose handler
raises :class:`DeadlineExceeded`. The signal interrupts a blocking system call and the handler runs at the next
bytecode; the handler re-checks the deadline, so a late signal never hits the next call. While the call stays
overdue (the verifier swallowed the exception) the signal is re-sent every :data:`RESEND_SECONDS`, and a call
that returns after its deadline still counts as timed out.

Limits: the main thread only (Python runs signal handlers there; :func:`available` says when); a C extension that
never returns to the interpreter, or code that catches ``BaseException`` in a loop forever, still hangs; a
deadline may be noticed up to :data:`IDLE_POLL_SECONDS` late. An exception raised at an arbitrary bytecode can leave the
interrupted object half-updated.
"""

from __future__ import annotations

import _signal
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DEADLINE_SIGNAL", "DeadlineExceeded", "available", "run"]

IDLE_POLL_SECONDS = 0.2  # how late a deadline may be noticed (the watchdog's sleep while no call runs)
RESEND_SECONDS = 0.05  # the signal is re-sent this often while the call stays overdue
DEADLINE_SIGNAL = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else None


class DeadlineExceeded(BaseException):
    """Raised in the main thread at a deadline (a ``BaseException``: ``except Exception`` does not catch it)."""


class _State:
    at = 0.0  # monotonic deadline of the call in flight; 0.0 when none
    fired = False  # the call in flight was interrupted at least once
    main_ident = 0  # the main thread whose watchdog runs; 0 until started (and again after a fork: threads do
    # not survive it)


os.register_at_fork(after_in_child=lambda: setattr(_State, "main_ident", 0))


def _on_signal(signum: int, frame: Any) -> None:
    at = _State.at
    if at and time.monotonic() >= at:
        _State.fired = True
        raise DeadlineExceeded


def _watch(main_ident: int) -> None:
    """Sleep until the deadline of the call in flight (or :data:`IDLE_POLL_SECONDS` when none), then signal the
    main thread while the call in flight is overdue. Waking rarely matters: each wake-up takes the GIL from the
    main thread."""
    while True:
        at, now = _State.at, time.monotonic()
        if not at:
            time.sleep(IDLE_POLL_SECONDS)
        elif now < at:
            time.sleep(at - now)  # a later call re-reads its own deadline after this
        else:
            if _signal.getsignal(DEADLINE_SIGNAL) is _on_signal:
                try:
                    signal.pthread_kill(main_ident, DEADLINE_SIGNAL)
                except (ProcessLookupError, OSError):
                    return  # the main thread is gone: the process is exiting
            time.sleep(RESEND_SECONDS)


def available() -> bool:
    """Whether :func:`run` can enforce a deadline here: the main thread, and the deadline signal ours to use."""
    ident = threading.get_ident()
    if ident == _State.main_ident and _signal.getsignal(DEADLINE_SIGNAL) is _on_signal:
        return True  # the fast path: ~0.1 µs
    if DEADLINE_SIGNAL is None or ident != threading.main_thread().ident:
        return False
    handler = _signal.getsignal(DEADLINE_SIGNAL)  # signal.getsignal's enum conversion costs ~5 µs a call
    if handler is not _on_signal:
        if handler != _signal.SIG_DFL:
            return False  # someone else's
        signal.signal(DEADLINE_SIGNAL, _on_signal)
    if _State.main_ident != ident:
        _State.main_ident = ident
        threading.Thread(target=_watch, args=(ident,), daemon=True, name="verifier-deadline").start()
    return True


def run(call: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """``(timed_out, call())``: ``call`` with a deadline (the main thread only: check :func:`available` first).

    When the deadline passes, ``call`` is interrupted with :class:`DeadlineExceeded` and ``(True, None)`` is
    returned; a call that swallowed it and returned late gives ``(True, its result)``. Other exceptions propagate.
    """
    _State.fired = False
    _State.at = time.monotonic() + seconds
    result = None
    try:
        result = call()
    except DeadlineExceeded:
        pass
    finally:
        while True:  # a signal already in flight may interrupt even this
            try:
                _State.at = 0.0
                break
            except DeadlineExceeded:
                continue
    return _State.fired, result
