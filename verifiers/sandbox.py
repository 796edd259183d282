"""Run untrusted Python (model-written code plus its unit tests) in a contained subprocess.

Why by hand: no well-kept library does this for a pip-installed toolkit without Docker/gVisor/firejail; the
pieces are the standard ones (nanochat's and OpenAI human-eval's ``reliability_guard`` style plus OS limits).

What the child gets (``SandboxLimits`` holds the numbers):

* resource limits set by ``resource.setrlimit`` in ``preexec_fn``: CPU seconds, address space, processes
  (``RLIMIT_NPROC``: fork bombs), file size (``RLIMIT_FSIZE``: disk fill, and the cap on stdout/stderr, which go
  to files) and open files; core dumps off;
* its own process group (``start_new_session``), SIGKILLed as a group at the wall-clock deadline and after exit;
* no network: when run as root (and the kernel allows it: probed once), a fresh network namespace (``unshare(CLONE_NEWNET)`` via libc) — the child sees
  only a down loopback. Otherwise ``socket`` is replaced by a raiser inside the child (weaker: code can reach the
  ``_socket`` C module), see ``network_isolation()``;
* when run as root, privileges dropped to a fresh unprivileged uid/gid (random, in a high range no account uses;
  "nobody" below) after the namespace is made: files outside the temporary working directory are safe from
  ``rm -rf`` by permissions, ``RLIMIT_NPROC`` is enforced (the kernel does not enforce it for root) and counts
  only this run's processes, and after the run *every* process of that uid is SIGKILLed — including children that
  left the process group with ``setsid``;
* a temporary working directory (deleted afterwards), a cleared environment, ``python -I -S`` (no user site, no
  site-packages, no ``PYTHON*`` variables), stdin closed, and destructive ``os``/``shutil``/``subprocess``
  functions disabled in-process (defence in depth, bypassable by determined code).

Pass/fail is *not* the exit code: the harness reads a random nonce from stdin before any candidate code runs,
runs the tests, and only then writes ``<nonce> PASS <passed>/<total>`` to a result file the parent opened. So
``sys.exit(0)`` / ``os._exit(0)`` before the tests, or printing "PASS", scores 0.

Limits (documented, not hidden): the candidate code runs in the harness's interpreter, so code written to
attack *this* harness (walking frames to find the nonce, patching the test's ``==``) can forge a pass; without
root there is no filesystem isolation beyond the in-process guard. Use a VM/container for hostile workloads.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxResult", "network_isolation", "run_python_tests", "sandbox_interpreter"]

_CLONE_NEWNET = 0x40000000
_UID_BASE = 2_000_000_000  # per-run uids are drawn from [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 100_000_000


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
      wall_seconds: wall-clock deadline; the whole process group is SIGKILLed after it.
      cpu_seconds: ``RLIMIT_CPU`` (per process).
      memory_bytes: ``RLIMIT_AS`` (address space).
      max_processes: ``RLIMIT_NPROC`` (enforced when the child runs as an unprivileged user).
      max_file_bytes: ``RLIMIT_FSIZE``: largest file the child may write, stdout/stderr included.
      max_open_files: ``RLIMIT_NOFILE``.
      output_bytes: how much of stdout/stderr is read back into the result.
      in_process_guard: also disable destructive ``os``/``shutil`` calls inside the child (defence in depth;
        switch off to test the OS-level limits alone).
    """

    wall_seconds: float = 5.0
    cpu_seconds: int = 4
    memory_bytes: int = 512 * 2**20
    max_processes: int = 32
    max_file_bytes: int = 1 * 2**20
    max_open_files: int = 64
    output_bytes: int = 4096
    in_process_guard: bool = True


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did.

    Attributes:
      passed: the harness reported that every test passed (nonce-signed), not merely exit code 0.
      tests_passed, tests_total: the harness's counts (0, 0 when it never reported).
      returncode: the child's exit status (negative: killed by that signal).
      timed_out: the wall-clock deadline was hit.
      stdout, stderr: the first ``output_bytes`` of each.
      error: the harness's description of the first failure, when it reported one.
    """

    passed: bool
    tests_passed: int
    tests_total: int
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    error: str = ""


def network_isolation() -> str:
    """``"namespace"`` when the child gets its own network namespace, else ``"socket-guard"``.

    Detected, not assumed: root in a container without ``CAP_SYS_ADMIN`` cannot ``unshare``, so a child process
    tries it once (cached) — a sandbox that silently failed every run would score all code 0.
    """
    return "namespace" if _probe_isolation()[0] else "socket-guard"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can reach and run ``path`` (every parent directory o+x, the file o+x)."""
    real = Path(os.path.realpath(path))
    try:
        return all(p.stat().st_mode & 0o001 for p in [real, *real.parents]) and bool(
            real.stat().st_mode & 0o004
        )
    except OSError:
        return False


def sandbox_interpreter() -> tuple[str, bool]:
    """The Python that runs the child and whether it may drop to ``nobody``.

    As root, the child runs as ``nobody``, so it needs an interpreter (and stdlib) ``nobody`` can read: this
    Python if it is world-accessible, else the system ``/usr/bin/python3`` (the harness needs only the stdlib).
    If neither is, the child stays root (no ``RLIMIT_NPROC``, no filesystem protection beyond the guard).
    """
    if not _probe_isolation()[1]:
        return sys.executable, False
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin") or ""):
        if candidate and _world_executable(candidate):
            return candidate, True
    return sys.executable, False


_PROBE = """
import ctypes, os, sys
netns = hasattr(ctypes.CDLL(None, use_errno=True), "unshare") and ctypes.CDLL(None).unshare({flag}) == 0
try:
    os.setgroups([]); os.setgid({uid}); os.setuid({uid}); dropped = os.getuid() == {uid}
except OSError:
    dropped = False
sys.stdout.write(f"{{int(netns)}}{{int(dropped)}}")
"""


@functools.lru_cache(maxsize=1)
def _probe_isolation() -> tuple[bool, bool]:
    """(network namespace works, dropping to a private uid works), tried once in a throwaway child."""
    if not _is_root():
        return False, False
    code = _PROBE.format(flag=_CLONE_NEWNET, uid=_UID_BASE)
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False, False
    return out.stdout[:1] == "1", out.stdout[1:2] == "1"


def _make_preexec(limits: SandboxLimits, isolate_network: bool, run_as: int | None):
    import resource  # POSIX only; imported here so the module imports anywhere

    # Resolved before the fork: no dlopen in the child (a lock another parent thread held at fork time would
    # deadlock it). os.unshare exists from Python 3.12; libc's through ctypes before that.
    unshare = (
        getattr(os, "unshare", None) or ctypes.CDLL(None, use_errno=True).unshare if isolate_network else None
    )

    def preexec() -> None:  # runs in the forked child before exec: keep it to async-signal-safe-ish calls
        if unshare is not None:
            try:
                failed = unshare(_CLONE_NEWNET) not in (0, None)
            except OSError:
                failed = True
            if failed:
                os._exit(111)  # refuse to run with network rather than silently run without isolation
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if run_as is not None:
            os.setgroups([])
            os.setgid(run_as)
            os.setuid(run_as)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

    return preexec


_HARNESS = Path(__file__).with_name("sandbox_harness.py")


def run_python_tests(code: str, tests: str, *, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` then ``tests`` (Python source, typically ``assert`` statements) in the sandbox.

    ``tests`` is split into top-level statements, each counted as one test; all must pass.
    """
    limits = limits or SandboxLimits()
    python, drop_privileges = sandbox_interpreter()
    run_as = _UID_BASE + secrets.randbelow(_UID_SPAN) if drop_privileges else None
    isolate_network = network_isolation() == "namespace"
    nonce = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="relabel-sandbox-"))
    private = Path(tempfile.mkdtemp(prefix="relabel-sandbox-result-"))  # not visible to the child's user
    try:
        (workdir / "solution.py").write_text(code)
        (workdir / "tests.py").write_text(tests)
        shutil.copy(_HARNESS, workdir / "harness.py")
        if run_as is not None:
            for path in [workdir, *workdir.iterdir()]:
                os.chown(path, run_as, run_as)
        result_path = private / "result"
        result_fd = os.open(result_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
        guard = "1" if limits.in_process_guard else "0"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr, _closing_fd(result_fd):
            process = subprocess.Popen(
                [python, "-I", "-S", "harness.py", str(result_fd), "1" if isolate_network else "0", guard],
                cwd=workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(result_fd,),
                start_new_session=True,
                preexec_fn=_make_preexec(limits, isolate_network, run_as),
            )
        try:
            process.stdin.write(f"{nonce}\n".encode())
            process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        timed_out = not _wait_for_exit(process, limits.wall_seconds)
        _kill_group(process.pid)  # children the code left behind in its group
        if run_as is not None:
            _kill_uid(run_as)  # and any that escaped the group (setsid, double fork)
        if timed_out:
            process.wait()
        return _read_result(
            result_path, nonce, process.returncode, timed_out, stdout_path, stderr_path, limits.output_bytes
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def _closing_fd(fd: int):
    try:
        yield fd
    finally:
        os.close(fd)


def _wait_for_exit(process: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds; True if the process exited (reaped).

    On Linux a pidfd wakes us the moment the child exits; ``Popen.wait(timeout)`` polls with sleeps of up to
    50 ms, which was most of a sandboxed run's latency.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if ready:
        process.wait()
    return bool(ready)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_uid(uid: int, *, rounds: int = 5) -> None:
    """SIGKILL every process whose real uid is ``uid`` (the run's private uid), until none is left."""
    for _ in range(rounds):
        found = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
            state = next((line for line in status.splitlines() if line.startswith("State:")), "")
            if uid_line.split()[1:2] == [str(uid)] and "zombie" not in state:
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def _read_result(
    result_path: Path,
    nonce: str,
    returncode: int | None,
    timed_out: bool,
    stdout_path: Path,
    stderr_path: Path,
    output_bytes: int,
) -> SandboxResult:
    def head(path: Path) -> str:
        try:
            with open(path, "rb") as handle:
                return handle.read(output_bytes).decode("utf-8", "replace")
        except OSError:
            return ""

    passed, tests_passed, tests_total, error = False, 0, 0, ""
    try:
        with open(result_path, "rb") as handle:
            lines = handle.read(64 * 1024).decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    for line in lines:  # only a line carrying the nonce counts; anything else in the file is ignored
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == nonce and parts[1] in ("PASS", "FAIL"):
            counts = parts[2].split("/")
            if len(counts) == 2 and all(c.isdigit() for c in counts):
                tests_passed, tests_total = int(counts[0]), int(counts[1])
                passed = parts[1] == "PASS" and tests_total > 0 and tests_passed == tests_total
                error = parts[3] if len(parts) > 3 else ""
    return SandboxResult(
        passed=passed and not timed_out,
        tests_passed=tests_passed,
        tests_total=tests_total,
        returncode=returncode,
        timed_out=timed_out,
        stdout=head(stdout_path),
        stderr=head(stderr_path),
        error=error,
    )
