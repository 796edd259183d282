"""Run untrusted Python (model-written code) against unit tests, isolated by the OS; judge the tests outside it.

Two layers, each doing one job:

* **isolation** — the child runs under `bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``, the
  standard unprivileged sandbox tool, as used by Flatpak): new user, PID, mount, network, IPC, UTS and cgroup
  namespaces. Its filesystem is a read-only view of the interpreter, its standard library and the shared-library
  directories, a fresh ``/proc`` (its own processes only), a minimal read-only ``/dev`` and a private tmpfs
  ``/tmp`` capped at ``tmp_bytes``; no network (only a down loopback), no other process's ``/proc`` entries, no
  repository, home or ``/etc``. When its PID 1 dies, the kernel kills everything in the namespace, so no fork
  chain outlives the run. Resource limits (``SandboxLimits``) are set by the harness before any candidate code:
  inside the user namespace ``RLIMIT_NPROC`` counts only this sandbox's processes. As root, ``bwrap`` itself
  runs as a fresh private uid (random, in a range no account uses) when the interpreter is world-readable.
* **judging** — the child never decides pass/fail. :mod:`verifiers.sandbox_checks` splits the tests into
  *probes* (the parts that need the candidate, e.g. ``add_k(3)``) that the child evaluates and reports as JSON,
  and checks the parent evaluates over those values (``== 8``). The expected values stay in the parent; a
  frame walk, an always-true ``__eq__`` or a cleared list of tests forges nothing.

**Fallback** (chosen when ``bwrap`` is not installed or cannot create its namespaces, e.g. in a container without
user namespaces; warned once, loudly, at the first run): today's rlimit sandbox — ``setrlimit`` limits, its own
session SIGKILLed as a group, a temporary working directory, and, as root, a network namespace and a private uid
whose processes are all killed after the run; an in-process guard disables destructive ``os`` calls. It does not
hide the filesystem or other processes and a determined program can bypass the guard: do not run hostile code
with it. ``RELABEL_SANDBOX=bubblewrap`` makes a missing bubblewrap an error instead; ``RELABEL_SANDBOX=rlimit``
forces the fallback.

Why by hand around ``bwrap``: no well-kept Python library runs a test suite under bubblewrap and compares the
results outside the sandbox; the pieces (namespaces, rlimits, a nonce-free trusted comparison) are standard.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import marshal
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

from verifiers.sandbox_checks import judge, plan_tests

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "isolation",
    "network_isolation",
    "run_python_tests",
    "sandbox_interpreter",
]

logger = logging.getLogger("verifiers.sandbox")

ISOLATION_ENV = "RELABEL_SANDBOX"  # auto (default) | bubblewrap | rlimit
_CLONE_NEWNET = 0x40000000
_UID_BASE = 2_000_000_000  # per-run uids are drawn from [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 100_000_000
_NOBODY = 65534


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
      wall_seconds: wall-clock deadline; the sandbox is SIGKILLed after it.
      cpu_seconds: ``RLIMIT_CPU`` (per process).
      memory_bytes: ``RLIMIT_AS`` (address space).
      max_processes: ``RLIMIT_NPROC``: processes of this sandbox (bubblewrap) or of its private uid (fallback).
      max_file_bytes: ``RLIMIT_FSIZE``: largest file the child may write, stdout/stderr/reports included.
      max_open_files: ``RLIMIT_NOFILE``.
      output_bytes: how much of stdout/stderr is read back into the result.
      tmp_bytes: size of the sandbox's private tmpfs ``/tmp`` (bubblewrap; memory, freed with the sandbox).
      in_process_guard: in the rlimit fallback, also disable destructive ``os``/``shutil`` calls inside the child
        (defence in depth; switch off to test the OS-level limits alone). Bubblewrap needs no guard.
    """

    wall_seconds: float = 5.0
    cpu_seconds: int = 4
    memory_bytes: int = 512 * 2**20
    max_processes: int = 32
    max_file_bytes: int = 1 * 2**20
    max_open_files: int = 64
    output_bytes: int = 4096
    tmp_bytes: int = 16 * 2**20
    in_process_guard: bool = True

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "in_process_guard":
                if not isinstance(value, bool):
                    raise ValueError(f"SandboxLimits.in_process_guard must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"SandboxLimits.{field.name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did.

    Attributes:
      passed: every test passed, as judged by the parent (never by the child), within the deadline.
      tests_passed, tests_total: passing top-level test statements, and all of them.
      returncode: the child's exit status (negative: killed by that signal).
      timed_out: the wall-clock deadline was hit.
      stdout, stderr: the first ``output_bytes`` of each.
      error: the first failure, described ('' when none).
      isolation: ``"bubblewrap"`` or ``"rlimit"`` (the fallback), see :func:`isolation`.
    """

    passed: bool
    tests_passed: int
    tests_total: int
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    error: str = ""
    isolation: str = ""


# --- choosing the isolation -----------------------------------------------------------------------------------


def isolation() -> str:
    """``"bubblewrap"`` or ``"rlimit"``: what the next run gets, from ``$RELABEL_SANDBOX`` and a cached probe.

    ``auto`` (the default) takes bubblewrap when ``bwrap`` is on ``PATH`` and a probe run inside it works, else
    the rlimit fallback with a one-time warning; ``bubblewrap`` raises ``RuntimeError`` instead of falling back;
    ``rlimit`` forces the fallback (tests of the fallback itself).
    """
    wanted = os.environ.get(ISOLATION_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "bubblewrap", "rlimit"):
        raise ValueError(f"{ISOLATION_ENV}={wanted!r}: expected auto, bubblewrap or rlimit")
    if wanted == "rlimit":
        return "rlimit"
    problem = _bubblewrap_problem()
    if problem is None:
        return "bubblewrap"
    if wanted == "bubblewrap":
        raise RuntimeError(f"{ISOLATION_ENV}=bubblewrap, but bubblewrap cannot run here: {problem}")
    _warn_fallback(problem)
    return "rlimit"


@functools.lru_cache(maxsize=1)
def _warn_fallback(problem: str) -> None:
    logger.warning(
        "\n%s\nSANDBOX FALLBACK: python_code runs model-written code WITHOUT bubblewrap (%s).\n"
        "The rlimit fallback limits CPU, memory, processes and file size, but the code can read the filesystem "
        "and other processes' command lines, and write files the run's user may write (as root it gets a private "
        "uid and no network). Install bubblewrap ('apt-get install bubblewrap'; 'make setup' does it as root), "
        "or set %s=bubblewrap to refuse to run without it. See docs/sandbox.md.\n%s",
        "!" * 100,
        problem,
        ISOLATION_ENV,
        "!" * 100,
    )


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can reach and run ``path`` (every parent directory o+x, the file o+rx)."""
    real = Path(os.path.realpath(path))
    try:
        return all(p.stat().st_mode & 0o001 for p in [real, *real.parents]) and bool(
            real.stat().st_mode & 0o004
        )
    except OSError:
        return False


@dataclass(frozen=True)
class _Bubblewrap:
    """How to start the sandbox: bwrap's path, the interpreter inside, the read-only binds, the user to run as."""

    bwrap: str
    python: str
    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]
    private_uid: bool  # run bwrap as a fresh private uid (root only)


@functools.lru_cache(maxsize=1)
def _bubblewrap_setup() -> _Bubblewrap | str:
    """The bubblewrap launch recipe, or why there is none (cached: probed once per process)."""
    bwrap = shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")
    if bwrap is None:
        return "bwrap is not installed"
    system = shutil.which("python3", path="/usr/bin:/bin")
    candidates = [c for c in (system, sys.executable) if c]
    python = next((c for c in candidates if _world_executable(c)), candidates[-1])
    python = os.path.realpath(python)
    prefix = os.path.realpath(sys.base_prefix) if python == os.path.realpath(sys.executable) else "/usr"
    binds = {python, "/usr/lib"} | ({prefix} if prefix != "/usr" else set())
    binds |= {p for p in ("/usr/lib64", "/usr/lib32") if os.path.isdir(p)}
    symlinks = []
    for top in ("/lib", "/lib64", "/lib32", "/bin"):
        if os.path.islink(top):
            symlinks.append((os.readlink(top), top))
        elif os.path.isdir(top) and top != "/bin":
            binds.add(top)
    setup = _Bubblewrap(
        bwrap, python, tuple(sorted(binds)), tuple(symlinks), _is_root() and _world_executable(python)
    )
    try:
        probe = subprocess.run(
            [*_bwrap_argv(setup, SandboxLimits()), "-c", "print('ok')"],
            capture_output=True,
            text=True,
            timeout=30,
            **_user_kwargs(setup),
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"{bwrap} failed to start: {error}"
    if probe.stdout.strip() != "ok":
        return f"{bwrap} failed: {(probe.stderr.strip() or f'exit code {probe.returncode}')[:300]}"
    return setup


def _bubblewrap_problem() -> str | None:
    setup = _bubblewrap_setup()
    return setup if isinstance(setup, str) else None


def _user_kwargs(setup: _Bubblewrap) -> dict:
    if not setup.private_uid:
        return {}
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
    return {"user": uid, "group": uid, "extra_groups": []}


def _bwrap_argv(setup: _Bubblewrap, limits: SandboxLimits) -> list[str]:
    argv = [setup.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    argv += ["--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    if _is_root() and not setup.private_uid:
        argv += ["--uid", str(_NOBODY), "--gid", str(_NOBODY)]
    for path in setup.binds:
        argv += ["--ro-bind", path, path]
    for target, link in setup.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += ["--size", str(math.ceil(limits.tmp_bytes)), "--tmpfs", "/tmp", "--chdir", "/tmp", "--clearenv"]
    for key, value in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("LANG", "C.UTF-8")):
        argv += ["--setenv", key, value]
    return [*argv, "--", setup.python, "-I", "-S"]


# --- the rlimit fallback ----------------------------------------------------------------------------------------


def network_isolation() -> str:
    """The fallback's network isolation: ``"namespace"`` (root, probed once) or ``"socket-guard"`` (in-process).

    Bubblewrap always has its own network namespace; this only describes the rlimit fallback.
    """
    return "namespace" if _probe_isolation()[0] else "socket-guard"


def sandbox_interpreter() -> tuple[str, bool]:
    """The fallback's Python and whether it may drop to a private uid (root, and the interpreter is readable)."""
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


def _rlimits(limits: SandboxLimits) -> list[tuple[str, int]]:
    """(name, value) of each resource limit, whole numbers (a limit from a recipe may be a float); NPROC last."""
    values = (
        ("RLIMIT_CPU", limits.cpu_seconds),
        ("RLIMIT_AS", limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.max_file_bytes),
        ("RLIMIT_NOFILE", limits.max_open_files),
        ("RLIMIT_CORE", 0),
        ("RLIMIT_NPROC", limits.max_processes),
    )
    return [(name, math.ceil(value)) for name, value in values]


def _make_preexec(limits: SandboxLimits, isolate_network: bool, run_as: int | None):
    import resource  # POSIX only; imported here so the module imports anywhere

    # Resolved before the fork: no dlopen in the child (a lock another parent thread held at fork time would
    # deadlock it). os.unshare exists from Python 3.12; libc's through ctypes before that.
    unshare = (
        getattr(os, "unshare", None) or ctypes.CDLL(None, use_errno=True).unshare if isolate_network else None
    )
    rlimits = [(getattr(resource, name), value) for name, value in _rlimits(limits)]

    def preexec() -> None:  # runs in the forked child before exec: keep it to async-signal-safe-ish calls
        if unshare is not None:
            try:
                failed = unshare(_CLONE_NEWNET) not in (0, None)
            except OSError:
                failed = True
            if failed:
                os._exit(111)  # refuse to run with network rather than silently run without isolation
        for which, value in rlimits[:-1]:
            resource.setrlimit(which, (value, value))
        if run_as is not None:
            os.setgroups([])
            os.setgid(run_as)
            os.setuid(run_as)
        resource.setrlimit(rlimits[-1][0], (rlimits[-1][1], rlimits[-1][1]))  # NPROC: after the uid drop

    return preexec


# --- one run ----------------------------------------------------------------------------------------------------

_HARNESS = Path(__file__).with_name("sandbox_harness.py")


@functools.lru_cache(maxsize=1)
def _harness_source() -> str:
    return _HARNESS.read_text()


def run_python_tests(code: str, tests: str, *, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code``, then judge ``tests`` (top-level ``assert`` statements) against it, in the sandbox.

    Each top-level statement of ``tests`` counts as one test; all must pass. Raises ``ValueError`` when
    ``tests`` does not parse or has no top-level ``assert`` (see :mod:`verifiers.sandbox_checks`).
    """
    limits = limits or SandboxLimits()
    plan = plan_tests(tests, code)
    backend = isolation()
    private = Path(tempfile.mkdtemp(prefix="relabel-sandbox-result-"))  # the child gets fds, never this path
    workdir = None if backend == "bubblewrap" else Path(tempfile.mkdtemp(prefix="relabel-sandbox-"))
    try:
        launch = _bubblewrap_launch(limits) if workdir is None else _fallback_launch(limits, workdir)
        job = {"code": code, "steps": [list(step) for step in plan.steps], **launch.job}
        returncode, timed_out = _run_child(launch, job, private, limits.wall_seconds)
        reports = _head(private / "result", limits.max_file_bytes)
        stopped = f"timed out after {limits.wall_seconds:g}s" if timed_out else _exit_reason(returncode)
        verdict = judge(plan, reports, stopped=stopped)
        return SandboxResult(
            passed=not timed_out and verdict.tests_total > 0 and verdict.tests_passed == verdict.tests_total,
            tests_passed=verdict.tests_passed,
            tests_total=verdict.tests_total,
            returncode=returncode,
            timed_out=timed_out,
            stdout=_head(private / "stdout", limits.output_bytes),
            stderr=_head(private / "stderr", limits.output_bytes),
            error=verdict.error,
            isolation=backend,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class _Launch:
    """How to start one child: the command, where, with what, and how to clean up after it."""

    argv: list[str]
    cwd: str
    env: dict
    popen: dict  # extra subprocess.Popen arguments (user/group, or preexec_fn for the fallback)
    job: dict  # what the harness needs to know about its isolation (rlimits to set, guards)
    bubblewrap: bool
    sweep_uid: int | None = None  # fallback: kill every process of this uid afterwards


def _bubblewrap_launch(limits: SandboxLimits) -> _Launch:
    setup = _bubblewrap_setup()
    if isinstance(setup, str):
        raise RuntimeError(f"bubblewrap cannot run here: {setup}")
    job = {"rlimits": _rlimits(limits), "guard": False, "block_network": False}
    argv = [*_bwrap_argv(setup, limits), "-c", _harness_source()]
    return _Launch(argv, "/", {}, _user_kwargs(setup), job, bubblewrap=True)


def _fallback_launch(limits: SandboxLimits, workdir: Path) -> _Launch:
    python, drop = sandbox_interpreter()
    run_as = _UID_BASE + secrets.randbelow(_UID_SPAN) if drop else None
    if run_as is not None:
        os.chown(workdir, run_as, run_as)
    isolate_network = network_isolation() == "namespace"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    job = {"rlimits": [], "guard": limits.in_process_guard, "block_network": not isolate_network}
    popen = {"preexec_fn": _make_preexec(limits, isolate_network, run_as)}
    argv = [python, "-I", "-S", "-c", _harness_source()]
    return _Launch(argv, str(workdir), env, popen, job, bubblewrap=False, sweep_uid=run_as)


def _run_child(launch: _Launch, job: dict, private: Path, wall_seconds: float) -> tuple[int | None, bool]:
    """Start the child with the job on stdin, wait up to the deadline, kill what is left; (returncode, timed out).

    The reports fd is inherited under its own number (bubblewrap passes inherited fds through), named in the job.
    Whatever happens here (a deadline of the caller's, KeyboardInterrupt), the child and everything it started
    are killed before this returns or raises.
    """
    result_fd = os.open(private / "result", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    process = None
    try:
        with open(private / "stdout", "wb") as stdout, open(private / "stderr", "wb") as stderr:
            process = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(result_fd,),
                start_new_session=True,
                **launch.popen,
            )
        child_fd, result_fd = result_fd, -1
        os.close(child_fd)
        with contextlib.suppress(BrokenPipeError, OSError):
            process.stdin.write(marshal.dumps({**job, "result_fd": child_fd}))
        with contextlib.suppress(BrokenPipeError, OSError):
            process.stdin.close()
        timed_out = not _wait_for_exit(process, wall_seconds)
        if timed_out:
            _kill_tree(process, None, launch.bubblewrap)
        return process.returncode, timed_out
    finally:
        if result_fd >= 0:
            os.close(result_fd)
        if process is not None:
            _kill_tree(process, launch.sweep_uid, launch.bubblewrap)


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


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc; [] when it is gone."""
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
    return found


def _kill_tree(process: subprocess.Popen, sweep_uid: int | None, bubblewrap: bool) -> None:
    """SIGKILL the child and everything it started.

    Bubblewrap: the sandbox's PID 1 is a child of the outer ``bwrap``; killing it makes the kernel kill every
    process in the PID namespace, and the outer ``bwrap`` exits once they are gone (a sandbox that exited by
    itself is already empty). Fallback: the child's process group, then every process of its private uid.
    """
    if process.returncode is None:
        for child in _children(process.pid):  # the namespace's init (bubblewrap) or the harness's children
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
    if process.returncode is None or not bubblewrap:  # after exit, the group lives on only through leftovers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    if sweep_uid is not None and not bubblewrap:
        _kill_uid(sweep_uid)


def _kill_uid(uid: int, *, rounds: int = 5) -> None:
    """SIGKILL every process whose uid is ``uid`` (the run's private uid), until none is left.

    First ``kill -KILL -1`` run *as that uid*: the kernel signals every process of the uid in one pass, under
    the task-list lock, so a fork chain cannot slip between a scan and a kill. Then a /proc sweep as a check.
    """
    kill = shutil.which("kill", path="/usr/bin:/bin")
    if kill is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], capture_output=True, timeout=10
            )
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


def _head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _exit_reason(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"the sandbox was killed by {signal.Signals(-returncode).name}"
    return f"the sandbox exited (code {returncode}) before reporting"
