"""The code sandbox under attack: every hostile program is contained, scores 0, and the test run survives.

Where the OS-level protection needs root (network namespace, dropping to ``nobody``), the attack is also run with
the in-process guard switched off, so the test proves the OS layer and not only the bypassable guard.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import verifiers
from verifiers.sandbox import SandboxLimits, network_isolation, run_python_tests, sandbox_interpreter

FAST = SandboxLimits(wall_seconds=3.0, cpu_seconds=2)
ROOT_ISOLATION = os.geteuid() == 0 and sandbox_interpreter()[1]
GUARDS = [True, False] if ROOT_ISOLATION else [True]


def _score(code: str, tests: str = "assert True", limits: SandboxLimits = FAST) -> float:
    return verifiers.load("python_code", limits=limits).score(f"```python\n{code}\n```", {"tests": tests})


def test_honest_code_passes_and_wrong_code_fails():
    assert _score("def f(x):\n    return 2 * x", "assert f(2) == 4\nassert f(0) == 0") == 1.0
    result = run_python_tests("def f(x):\n    return x", "assert f(2) == 2\nassert f(3) == 6", limits=FAST)
    assert (result.passed, result.tests_passed, result.tests_total) == (False, 1, 2)
    assert "AssertionError" in result.error


def test_exit_before_tests_is_not_a_pass():
    for code in ("import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit(0)"):
        result = run_python_tests(code, "assert True", limits=FAST)
        assert not result.passed and result.returncode == 0, code  # exit code 0, still no pass


def test_forged_pass_lines_do_not_count():
    forge = (
        "import os\nprint('PASS 1/1')\n"
        "for fd in range(3, 40):\n"
        "    try:\n        os.write(fd, b'0123 PASS 1/1\\n')\n    except OSError:\n        pass\n"
        "os._exit(0)"
    )
    assert _score(forge) == 0.0


def test_environment_is_cleared_and_cwd_is_a_fresh_temp_dir(monkeypatch):
    monkeypatch.setenv("RELABEL_SECRET_TOKEN", "hunter2")
    tests = (
        "import os\nassert 'RELABEL_SECRET_TOKEN' not in os.environ\nassert 'relabel-sandbox-' in os.getcwd()"
    )
    assert _score("x = 1", tests) == 1.0


@pytest.mark.parametrize("guard", GUARDS)
def test_rm_rf_outside_the_temp_dir_is_contained(tmp_path, guard):
    sentinel = tmp_path / "keep" / "sentinel.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("still here")
    code = (
        "import os, shutil\n"
        f"target = {str(sentinel)!r}\n"
        "damaged = False\n"
        "for attempt in (lambda: os.remove(target), lambda: shutil.rmtree(os.path.dirname(target)),\n"
        "                lambda: open(target, 'w').write('overwritten')):\n"
        "    try:\n        attempt()\n        damaged = True\n    except Exception:\n        pass\n"
    )
    limits = SandboxLimits(wall_seconds=3.0, cpu_seconds=2, in_process_guard=guard)
    assert _score(code, "assert damaged", limits) == 0.0
    assert sentinel.read_text() == "still here"
    if not guard:  # positive control: the same attack on a file the sandbox owns does succeed
        own = code.replace(repr(str(sentinel)), "'own.txt'").replace(
            "import os, shutil", "import os, shutil\nopen('own.txt', 'w')"
        )
        assert _score(own, "assert damaged", limits) == 1.0


@pytest.mark.parametrize("guard", GUARDS)
def test_fork_bomb_is_contained(guard):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    limits = SandboxLimits(wall_seconds=2.0, cpu_seconds=2, max_processes=16, in_process_guard=guard)
    start = time.monotonic()
    result = run_python_tests(code, "assert True", limits=limits)
    assert not result.passed
    assert time.monotonic() - start < 10.0


@pytest.mark.parametrize("guard", [True, False] if network_isolation() == "namespace" else [True])
def test_network_is_unreachable(guard):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"connection = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "connection.sendall(b'exfiltrate')"
        )
        limits = SandboxLimits(wall_seconds=3.0, cpu_seconds=2, in_process_guard=guard)
        assert _score(code, "assert connection is not None", limits) == 0.0
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_memory_bomb_is_contained():
    start = time.monotonic()
    for code in (
        "x = bytearray(8 * 1024**3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
    ):
        assert _score(code) == 0.0
    assert time.monotonic() - start < 10.0


def test_infinite_loop_is_killed():
    start = time.monotonic()
    result = run_python_tests(
        "while True:\n    pass", "assert True", limits=SandboxLimits(wall_seconds=1.5, cpu_seconds=1)
    )
    assert not result.passed and result.returncode is not None and result.returncode < 0
    assert time.monotonic() - start < 4.0
    sleeper = run_python_tests(
        "import time\ntime.sleep(30)", "assert True", limits=SandboxLimits(wall_seconds=1.0)
    )
    assert sleeper.timed_out and not sleeper.passed


def test_huge_output_is_capped():
    code = "while True:\n    print('y' * 10000)"
    result = run_python_tests(code, "assert True", limits=FAST)
    assert not result.passed
    assert 0 < len(result.stdout) <= FAST.output_bytes


@pytest.mark.skipif(not ROOT_ISOLATION, reason="the per-run uid sweep needs root")
def test_children_that_leave_the_process_group_are_killed():
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)"
    )
    result = run_python_tests(code, "assert True", limits=FAST)
    assert result.passed  # the parent itself behaved
    escaped = int(result.stdout.split()[0])
    status = f"/proc/{escaped}/status"
    alive = os.path.exists(status) and "zombie" not in Path(status).read_text()
    assert not alive, f"escaped child {escaped} survived the run"


def test_in_process_guard_confines_writes_to_the_working_directory(tmp_path):
    outside = tmp_path / "outside.txt"
    code = (
        "import os\n"
        "open('inside.txt', 'w').write('ok')\n"
        "written = []\n"
        f"for path in ({str(outside)!r}, '/tmp/relabel-sandbox-escape.txt'):\n"
        "    try:\n        open(path, 'w').write('x')\n        written.append(path)\n    except OSError:\n        pass\n"
        "    try:\n        os.close(os.open(path, os.O_WRONLY | os.O_CREAT))\n        written.append(path)\n"
        "    except OSError:\n        pass\n"
    )
    tests = "assert open('inside.txt').read() == 'ok'\nassert written == []"
    assert _score(code, tests) == 1.0
    assert not outside.exists() and not Path("/tmp/relabel-sandbox-escape.txt").exists()
