"""The code sandbox under attack: every hostile program is contained, scores 0, and the test run survives.

The attacks of issue 15 run against the bubblewrap sandbox (skipped, with the reason, where bubblewrap cannot run;
CI runs as root with bubblewrap installed); the basic containment tests run against both backends, the rlimit
fallback included (``RELABEL_SANDBOX=rlimit``). Processes and files an attack might leave on the host carry a
random marker, so the tests look for exactly those, and remove them, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import verifiers
from verifiers import sandbox
from verifiers.sandbox import SandboxLimits, run_python_tests

FAST = SandboxLimits(wall_seconds=3.0, cpu_seconds=2)
BWRAP_PROBLEM = sandbox._bubblewrap_problem()
needs_bubblewrap = pytest.mark.skipif(
    BWRAP_PROBLEM is not None and os.environ.get("RELABEL_SANDBOX") != "bubblewrap",
    reason=f"bubblewrap cannot run here: {BWRAP_PROBLEM}",
)
BACKENDS = [pytest.param("bubblewrap", marks=needs_bubblewrap), "rlimit"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("RELABEL_SANDBOX", request.param)
    return request.param


def _score(code: str, tests: str = "assert True", limits: SandboxLimits = FAST) -> float:
    return verifiers.load("python_code", limits=limits).score(f"```python\n{code}\n```", {"tests": tests})


def _processes_with(marker: str) -> list[int]:
    """Host pids with a thread whose command line contains ``marker`` (a process whose main thread exited shows
    as a zombie with an empty command line; its other threads still show it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if any(
                    marker.encode() in (task / "cmdline").read_bytes() for task in (entry / "task").iterdir()
                ):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


# --- basics, on both backends ----------------------------------------------------------------------------


def test_honest_code_passes_and_wrong_code_fails(backend):
    assert _score("def f(x):\n    return 2 * x", "assert f(2) == 4\nassert f(0) == 0") == 1.0
    result = run_python_tests("def f(x):\n    return x", "assert f(2) == 2\nassert f(3) == 6", limits=FAST)
    assert (result.passed, result.tests_passed, result.tests_total) == (False, 1, 2)
    assert "f(3) == 6" in result.error and "returned 3" in result.error
    assert result.isolation == backend


def test_exit_before_tests_is_not_a_pass(backend):
    for code in ("import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit(0)"):
        result = run_python_tests(code, "assert True", limits=FAST)
        assert not result.passed, code


def test_environment_is_cleared(backend, monkeypatch):
    monkeypatch.setenv("RELABEL_SECRET_TOKEN", "hunter2")
    tests = (
        "import os\nassert 'RELABEL_SECRET_TOKEN' not in dict(os.environ)\nassert 'HOME' in dict(os.environ)"
    )
    assert _score("x = 1", tests) == 1.0


def test_fork_bomb_is_contained(backend):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    limits = SandboxLimits(wall_seconds=2.0, cpu_seconds=2, max_processes=16, in_process_guard=False)
    start = time.monotonic()
    assert not run_python_tests(code, "assert True", limits=limits).passed
    assert time.monotonic() - start < 10.0


def test_memory_bomb_is_contained(backend):
    start = time.monotonic()
    for code in (
        "x = bytearray(8 * 1024**3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
    ):
        assert _score(code) == 0.0
    assert time.monotonic() - start < 10.0


def test_infinite_loop_and_sleeper_are_killed(backend):
    start = time.monotonic()
    looping = run_python_tests("while True:\n    pass", "assert True", limits=SandboxLimits(wall_seconds=1.5))
    sleeper = run_python_tests(
        "import time\ntime.sleep(30)", "assert True", limits=SandboxLimits(wall_seconds=1.0)
    )
    assert looping.timed_out and sleeper.timed_out and not looping.passed and not sleeper.passed
    assert time.monotonic() - start < 6.0


def test_huge_output_is_capped(backend):
    result = run_python_tests("while True:\n    print('y' * 10000)", "assert True", limits=FAST)
    assert not result.passed
    assert 0 < len(result.stdout) <= FAST.output_bytes


@pytest.mark.parametrize("guard", [True, False])
def test_network_is_unreachable(backend, guard):
    if backend == "rlimit" and not guard and sandbox.network_isolation() != "namespace":
        pytest.skip("the rlimit fallback has no network namespace here (not root)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        code = (
            "import socket\nconnected = False\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1).sendall(b'x')\n"
            "    connected = True\nexcept OSError:\n    pass"
        )
        limits = SandboxLimits(wall_seconds=3.0, cpu_seconds=2, in_process_guard=guard)
        assert _score(code, "assert connected is False", limits) == 1.0
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


# --- issue 15: the attacks, against bubblewrap ---------------------------------------------------------------

# setsid, fork, parent exits, in a tight loop: a new pid faster than a sweep finds it (ends itself after 3 s)
_CHAIN = (
    "import os, time\nend = time.time() + 3\nwhile time.time() < end:\n"
    "    try:\n        if os.fork():\n            os._exit(0)\n        os.setsid()\n    except OSError:\n        pass"
)


# a daemon whose main thread exits: the process shows as a zombie while a thread lives on (ends itself after 20 s)
_UNDEAD = (
    "import ctypes, threading, time\nend = time.time() + 20\n"
    "threading.Thread(target=lambda: time.sleep(max(0.0, end - time.time()))).start()\n"
    "ctypes.CDLL(None).pthread_exit(None)"
)


@needs_bubblewrap
@pytest.mark.parametrize("daemon", ["fork_chain", "undead"])
def test_daemons_die_with_the_sandbox(daemon):
    marker = f"relabel-daemon-{secrets.token_hex(6)}"
    program, copies = {"fork_chain": (_CHAIN, 4), "undead": (_UNDEAD, 1)}[daemon]
    code = (
        "import os, sys\n"
        f"for _ in range({copies}):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {program!r}, {marker!r}])\n"
        "import time\ntime.sleep(0.3)"
    )
    try:
        for _ in range(3):
            result = run_python_tests(code, "assert True", limits=SandboxLimits(max_processes=64))
            assert result.passed, result.error
        time.sleep(0.3)
        assert _processes_with(marker) == [], f"a {daemon} daemon outlived its sandbox"
    finally:
        _kill(_processes_with(marker))
        _kill(_processes_with(marker))


@needs_bubblewrap
def test_writes_outside_the_sandbox_do_not_persist():
    marker = f"relabel-escape-{secrets.token_hex(6)}"
    targets = [f"/tmp/{marker}", f"/dev/shm/{marker}", f"/var/tmp/{marker}"]
    code = (
        "import posix\nwritten = []\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT, 0o666)\n"
        "        posix.write(fd, b'escaped')\n        posix.close(fd)\n        written.append(path)\n"
        "    except OSError:\n        pass\n"
        "total = 0\n"  # then fill /tmp: 48 MiB in 1 MiB files (RLIMIT_FSIZE caps one file, not many)
        "for i in range(48):\n"
        "    try:\n"
        f"        fd = posix.open('/tmp/{marker}-fill-%d' % i, posix.O_WRONLY | posix.O_CREAT, 0o666)\n"
        "        total += posix.write(fd, b'x' * 2**20)\n        posix.close(fd)\n"
        "    except OSError:\n        break\n"
    )
    try:
        result = run_python_tests(
            code, "assert total <= 16 * 2**20\nassert written == ['/tmp/" + marker + "']"
        )
        assert result.passed, result.error  # /tmp is the sandbox's own, capped at tmp_bytes (16 MiB)
        assert result.isolation == "bubblewrap"
        assert not any(Path(p).exists() for p in targets), "a file written in the sandbox persisted"
        assert not list(Path("/tmp").glob(f"{marker}-fill-*"))
    finally:
        for path in [*targets, *map(str, Path("/tmp").glob(f"{marker}-fill-*"))]:
            Path(path).unlink(missing_ok=True)


@needs_bubblewrap
def test_unix_sockets_of_the_host_are_unreachable():
    path = f"/tmp/relabel-socket-{secrets.token_hex(6)}"
    abstract = f"\0relabel-abstract-{secrets.token_hex(6)}"
    servers = []
    try:
        for address in (path, abstract):
            server = socket.socket(socket.AF_UNIX)
            server.bind(address)
            server.listen(1)
            server.settimeout(0.2)
            servers.append(server)
        os.chmod(path, 0o777)
        code = (
            "import _socket\nreached = []\n"
            f"for address in ({path!r}, {abstract!r}):\n"
            "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
            "    try:\n        s.connect(address)\n        s.send(b'x')\n        reached.append(address)\n"
            "    except OSError:\n        pass\n"
        )
        assert _score(code, "assert reached == []") == 1.0
        for server in servers:
            with pytest.raises(TimeoutError):
                server.accept()
    finally:
        for server in servers:
            server.close()
        Path(path).unlink(missing_ok=True)


@needs_bubblewrap
def test_world_readable_files_are_not_visible(tmp_path):
    secret_dir = Path(f"/tmp/relabel-secret-{secrets.token_hex(6)}")
    secret_dir.mkdir(mode=0o755)
    try:
        secret = secret_dir / "secret.txt"
        secret.write_text("hunter2")
        secret.chmod(0o644)
        repo_file = str(Path(sandbox.__file__).resolve())
        code = (
            "leaked = []\n"
            f"for path in ({str(secret)!r}, {repo_file!r}, '/etc/passwd', '/root/.bashrc'):\n"
            "    try:\n        leaked.append((path, open(path).read(20)))\n    except OSError:\n        pass\n"
            "own = open('/proc/self/cmdline', 'rb').read()\n"
        )
        assert _score(code, "assert leaked == []\nassert len(own) > 0") == 1.0
    finally:
        for path in secret_dir.iterdir():
            path.unlink()
        secret_dir.rmdir()


@needs_bubblewrap
def test_other_processes_are_invisible():
    marker = f"relabel-cmdline-secret-{secrets.token_hex(6)}"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        code = (
            "import os\nseen, pids = False, 0\n"
            "for pid in os.listdir('/proc'):\n"
            "    if pid.isdigit():\n"
            "        pids += 1\n"
            "        try:\n"
            f"            seen = seen or {marker!r}.encode() in open(f'/proc/{{pid}}/cmdline', 'rb').read()\n"
            "        except OSError:\n            pass\n"
        )
        assert _score(code, "assert seen is False\nassert 0 < pids <= 4") == 1.0
    finally:
        other.kill()
        other.wait()


# --- issue 15: forged passes (the child never decides) -----------------------------------------------------

_FRAME_WALK = """
import gc, os, sys
target = int('98765432' + chr(49))  # the test's oracle for a leak (built at run time: not a constant here)
found, texts = False, set()
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        if isinstance(value, str) and len(value) == 32:
            texts.add(value)  # the old harness's nonce
    frame = frame.f_back

target_text = str(target)

def hit(value):  # the value anywhere but in this module's own two variables
    return (type(value) is int and value == target and value is not target) or (
        type(value) is str and value == target_text and value is not target_text)

for obj in gc.get_objects():
    try:
        if isinstance(obj, dict):
            values = list(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            values = list(obj)
        else:
            values = list(vars(obj).values()) if hasattr(obj, '__dict__') else []
        found = found or any(hit(v) for v in values)
    except Exception:
        pass
try:
    found = found or target_text in open('tests.py').read()
except OSError:
    pass
forged = ''.join(f'{t} PASS 1/1\\n' for t in texts) + '{"load":null}\\n'
forged += ''.join('{"i":%d,"v":true}\\n' % i for i in range(8)) + '{"done":true}\\n'  # its best guess
for fd in range(3, 64):
    try:
        os.write(fd, forged.encode())
    except OSError:
        pass
def f(x):
    return 0
"""


def test_frame_walk_forges_nothing_and_never_sees_the_expected_value(backend):
    result = run_python_tests(_FRAME_WALK, "assert f(3) == 987654321\nassert not found", limits=FAST)
    assert (result.passed, result.tests_passed) == (False, 0)  # the forged values are its own answers
    honest = _FRAME_WALK.replace("os.write(fd, ", "len(")  # the same search, without forging
    result = run_python_tests(honest, "assert f(3) == 987654321\nassert not found", limits=FAST)
    assert result.tests_passed == 1 and "f(3) == 987654321" in result.error  # the child never saw it
    exiting = _FRAME_WALK + "os._exit(0)\n"
    assert not run_python_tests(exiting, "assert f(3) == 987654321", limits=FAST).passed


def test_always_equal_objects_do_not_pass(backend):
    code = (
        "class Equal:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
        "class EqualInt(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return Equal()\n"
        "def g(x):\n    return EqualInt(0)\n"
    )
    result = run_python_tests(code, "assert f(3) == 987654321\nassert g(3) == 987654321", limits=FAST)
    assert (result.passed, result.tests_passed) == (False, 0)
    assert _score(code, "assert f(1) != 2") == 0.0  # an opaque object is compared with nothing


def test_clearing_the_harness_state_does_not_pass(backend):
    code = (
        "import ast, sys\nframe = sys._getframe()\n"
        "def neuter(items):\n"
        "    if items and all(isinstance(s, ast.stmt) for s in items):\n"
        "        items[:] = [ast.Pass(lineno=1, col_offset=0) for _ in items]  # the old harness's statements\n"
        "    elif items and all(isinstance(s, list) for s in items):\n"
        "        items[:] = [['exec', 'pass'] for _ in items]\n"
        "    else:\n        items.clear()\n"
        "while frame is not None:\n"
        "    for value in list(frame.f_locals.values()):\n"
        "        for items in [value] if isinstance(value, list) else list(value.values()) "
        "if isinstance(value, dict) else []:\n"
        "            if isinstance(items, list):\n                neuter(items)\n"
        "    frame = frame.f_back\n"
        "def f(x):\n    return 0\n"
    )
    assert _score(code, "assert f(3) == 987654321") == 0.0


# --- the fallback ----------------------------------------------------------------------------------------------


def test_fallback_is_chosen_when_bubblewrap_cannot_run_and_warned_once(monkeypatch, caplog):
    monkeypatch.delenv("RELABEL_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_bubblewrap_setup", lambda: "bwrap is not installed")
    sandbox._warn_fallback.cache_clear()
    assert _score("def f(x):\n    return x", "assert f(1) == 1") == 1.0
    assert _score("def f(x):\n    return x", "assert f(1) == 1") == 1.0
    assert caplog.text.count("SANDBOX FALLBACK") == 1 and "bwrap is not installed" in caplog.text
    monkeypatch.setenv("RELABEL_SANDBOX", "bubblewrap")
    with pytest.raises(RuntimeError, match="bubblewrap cannot run here"):
        run_python_tests("x = 1", "assert True")
    monkeypatch.setenv("RELABEL_SANDBOX", "docker")
    with pytest.raises(ValueError, match="RELABEL_SANDBOX"):
        run_python_tests("x = 1", "assert True")


def test_rlimit_fallback_protects_files_with_its_private_uid(tmp_path, monkeypatch):
    monkeypatch.setenv("RELABEL_SANDBOX", "rlimit")
    if not sandbox.sandbox_interpreter()[1]:
        pytest.skip("the fallback drops to a private uid only as root")
    sentinel = tmp_path / "keep" / "sentinel.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("still here")
    code = (
        "import posix\ndamaged = False\n"
        f"try:\n    posix.unlink({str(sentinel)!r})\n    damaged = True\nexcept OSError:\n    pass\n"
    )
    limits = SandboxLimits(wall_seconds=3.0, in_process_guard=False)
    assert _score(code, "assert damaged is False", limits) == 1.0
    assert sentinel.read_text() == "still here"


def test_rlimit_fallback_guard_confines_writes_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RELABEL_SANDBOX", "rlimit")
    outside = tmp_path / "outside.txt"
    code = (
        "import os\nopen('inside.txt', 'w').write('ok')\nwritten = []\n"
        f"for path in ({str(outside)!r}, '/tmp/relabel-sandbox-escape.txt'):\n"
        "    try:\n        open(path, 'w').write('x')\n        written.append(path)\n    except OSError:\n        pass\n"
        "    try:\n        os.close(os.open(path, os.O_WRONLY | os.O_CREAT))\n        written.append(path)\n"
        "    except OSError:\n        pass\n"
    )
    assert _score(code, "assert open('inside.txt').read() == 'ok'\nassert written == []") == 1.0
    assert not outside.exists() and not Path("/tmp/relabel-sandbox-escape.txt").exists()


def test_bad_tests_are_a_clear_error():
    with pytest.raises(ValueError, match="no top-level assert"):
        run_python_tests("def f(x):\n    return x", "f(1)")
    with pytest.raises(ValueError, match="do not parse"):
        run_python_tests("def f(x):\n    return x", "assert f(1) ==")


def test_limits_are_validated_and_may_come_from_a_recipe_as_floats():
    for bad in ({"tmp_bytes": 0}, {"wall_seconds": -1}, {"max_processes": True}, {"in_process_guard": "yes"}):
        with pytest.raises(ValueError, match="SandboxLimits"):
            SandboxLimits(**bad)
    limits = SandboxLimits(wall_seconds=3.0, cpu_seconds=2.0, max_processes=16.0)
    assert _score("def f(x):\n    return x", "assert f(1) == 1", limits) == 1.0
