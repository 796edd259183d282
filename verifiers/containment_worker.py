"""The worker process of :mod:`verifiers.containment`: one verifier, one call at a time, nothing left behind.

Process layout (Linux)::

    caller ──spawn──▶ keeper (own session; child subreaper; stdio → the output pipe)
                        └──fork──▶ worker (dies with the keeper; child subreaper; runs the verifier)

* The **worker** unpickles the verifier and answers ``(method, args)`` requests with plain values (a float, a
  bool, None or a failure kind and a message: never an object of the verifier's). After every call it kills
  every process the call left behind (children and, being a subreaper, orphaned grandchildren), so a verifier
  that forks a child per call leaves nothing running.
* The **keeper** is the worker's parent, so ``os.kill(os.getppid(), 9)`` from a verifier kills the keeper, not
  the caller (the worker then dies of ``PR_SET_PDEATHSIG`` and the call counts as ``worker_died``). When the
  worker dies (deadline, crash), its orphans are reparented to the keeper, which kills them all and exits. It
  runs in its own session, so ``kill(0, ...)`` and a caller-side ``killpg`` reach only this group.
* stdin is ``/dev/null`` and stdout/stderr of both are the write end of a pipe the caller drains (and caps), so
  a verifier's prints never reach the caller's stdout/stderr and no leftover process holds them open.

Why by hand: ``multiprocessing`` spawns and pipes well but neither kills a worker's descendants nor separates its
output; ``concurrent.futures`` pools add neither. Limits: a verifier can still find and signal the caller by pid
(same uid, no PID namespace; a plugin's import-time code runs in the caller anyway), and a process that
escapes with ``setsid`` *and* outlives the keeper's death by ``SIGKILL`` is not reaped. Containment is against
broken verifiers, not hostile ones: run those in a container.
"""

from __future__ import annotations

import contextlib
import ctypes
import numbers
import os
import pickle
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def children(pid: int | None = None) -> list[int]:
    """Direct children of ``pid`` (default: this process), all threads', from /proc; [] where unknown."""
    pid = os.getpid() if pid is None else pid
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
    return found


def kill_descendants(*, rounds: int = 1000) -> int:
    """SIGKILL and reap every descendant of this process (a child subreaper); returns how many were killed.

    Killing the children reparents their children to us, so each round reaches one level deeper.
    """
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0) and not children():
            return 0  # only a child of another thread's making, gone since; nothing to do
    except ChildProcessError:
        return 0  # no children at all: the common case, one system call
    killed = 0
    for _ in range(rounds):
        kids = children()
        if not kids:
            break
        for kid in kids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(kid, signal.SIGKILL)
        for kid in kids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(kid, 0)
        killed += len(kids)
    return killed


def to_score(value: Any) -> tuple[str, Any]:
    """A verifier's raw score as ("ok", float) or (failure kind, detail), never raising (``float()`` may)."""
    if type(value) is float:  # the common case, without the numbers.Real ABC check (~1 µs)
        return "ok", value
    try:
        if isinstance(value, bool):
            return "ok", float(value)
        if not isinstance(value, numbers.Real):
            return "not_a_number", f"returned {type(value).__name__}: {_repr(value)}"
        score = float(value)
        if type(score) is not float:
            return "not_a_number", f"float() returned {type(score).__name__}"
        return "ok", score
    except Exception as error:  # a Real whose __float__ raises, an isinstance that raises
        return "not_a_number", f"float() failed: {type(error).__name__}: {error}"[:300]


def to_step_check(value: Any) -> tuple[str, Any]:
    """A raw ``check_step`` answer as ("ok", True/False/None) or ("not_a_bool", detail)."""
    if value is None or value is True or value is False:
        return "ok", value
    return "not_a_bool", f"returned {_repr(value)}"


def _repr(value: Any) -> str:
    try:
        return repr(value)[:80]
    except Exception:
        return f"<{type(value).__name__}>"


def describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"[:300]
    except Exception:
        return type(error).__name__


def _close_other_fds(keep: list[int]) -> None:
    """Close every fd above 2 except ``keep`` (the worker must not hold the caller's pipes or sentinels)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def keeper_main(conn: Any, output: Any, payload: bytes, memory_limit_bytes: int | None) -> None:
    """The keeper: a ``spawn`` target. Starts the worker, waits for it, kills whatever it left, exits."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    os.close(devnull)
    output.close()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # the caller died: clean up as for a terminate()
    keeper = os.getpid()
    worker = os.fork()
    if worker == 0:
        status = 1
        try:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != keeper:  # the keeper died before the line above
                os._exit(1)
            _close_other_fds([conn.fileno()])
            _serve(conn, payload, memory_limit_bytes)
            status = 0
        finally:
            os._exit(status)
    conn.close()  # only the worker holds the child end: the caller sees EOF the moment it dies
    signal.signal(signal.SIGTERM, lambda *_: _kill_quietly(worker))
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == worker:
            break
    kill_descendants()
    os._exit(0)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _serve(conn: Any, payload: bytes, memory_limit_bytes: int | None) -> None:
    """The worker loop: answer (method, args) requests with plain values until the pipe closes."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if memory_limit_bytes is not None:
        with contextlib.suppress(ImportError, ValueError, OSError):  # POSIX only
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    try:
        verifier = pickle.loads(payload)
    except BaseException as error:
        conn.send(("failed", f"cannot load the verifier: {describe(error)}"))
        return
    conn.send(("ready", os.getpid()))
    convert = {"score": to_score, "check_step": to_step_check}
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            status, value = convert[method](getattr(verifier, method)(*args))
        except (Exception, SystemExit) as error:
            status, value = "exception", describe(error)
        kill_descendants()
        conn.send((status, value))
