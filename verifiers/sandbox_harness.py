"""The harness that runs *inside* the sandbox child (``python -I -S harness.py RESULT_FD NETNS GUARD``).

It is copied into the child's temporary directory and never imported by the parent. Order matters:

1. read the nonce from stdin and close stdin, before any candidate code exists in the process;
2. apply the in-process guard (no ``socket`` without a network namespace; no file deletion/renaming, no writing
   outside the working directory, no ``kill``) — defence in depth on top of the OS limits the parent set;
3. load ``solution.py`` as a module (this is the sandbox: candidate code runs here and only here);
4. run each top-level statement of ``tests.py`` in the solution's namespace, counting passes;
5. write ``<nonce> PASS|FAIL <passed>/<total> <first error>`` to the result fd and ``os._exit`` at once, so no
   ``atexit`` hook or lingering thread of the candidate runs after the verdict.
"""

import ast
import builtins
import importlib.util
import os
import shutil
import subprocess
import sys


def _disabled(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the sandbox")

    return refuse


def _confine_writes(cwd):
    """Refuse to open files for writing outside the working directory (builtins.open, io.open, os.open)."""
    import io

    def inside(path):
        real = os.path.realpath(os.fsdecode(path))
        return real == cwd or real.startswith(cwd + os.sep) or real == os.devnull

    original_open, original_os_open = builtins.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_open(file, mode="r", *args, **kwargs):
        if (
            isinstance(file, (str, bytes, os.PathLike))
            and any(c in mode for c in "wax+")
            and not inside(file)
        ):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {file!r}")
        return original_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {path!r}")
        return original_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open


def _guard(block_network):
    for name in (
        "kill",
        "killpg",
        "remove",
        "unlink",
        "rmdir",
        "removedirs",
        "rename",
        "renames",
        "replace",
        "truncate",
        "chmod",
        "chown",
        "lchown",
        "putenv",
        "unsetenv",
    ):
        if hasattr(os, name):
            setattr(os, name, _disabled(f"os.{name}"))
    _confine_writes(os.path.realpath(os.getcwd()))
    shutil.rmtree = _disabled("shutil.rmtree")
    shutil.move = _disabled("shutil.move")
    subprocess.Popen.kill = _disabled("Popen.kill")
    if block_network:
        import socket

        socket.socket = _disabled("socket.socket")
        socket.create_connection = _disabled("socket.create_connection")
        socket.socketpair = _disabled("socket.socketpair")


def main():
    result_fd, in_netns, guard = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    write, exit_now = os.write, os._exit
    with open("tests.py") as handle:
        statements = ast.parse(handle.read(), "tests.py").body
    total, passed, error = len(statements), 0, ""
    if guard:
        _guard(block_network=not in_netns)
    elif not in_netns:
        _guard(block_network=True)  # without a namespace the socket guard is all there is
    try:
        spec = importlib.util.spec_from_file_location("solution", "solution.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["solution"] = module
        spec.loader.exec_module(module)
        namespace = vars(module)
        for statement in statements:
            try:
                exec(compile(ast.Module([statement], []), "tests.py", "exec"), namespace)  # trusted test code
                passed += 1
            except BaseException as exc:  # SystemExit too: exiting is not passing
                error = error or f"{type(exc).__name__}: {exc}"
    except BaseException as exc:
        error = f"while loading the solution: {type(exc).__name__}: {exc}"
    verdict = "PASS" if total and passed == total else "FAIL"
    error = error.replace("\n", " ")[:200]
    write(result_fd, f"{nonce} {verdict} {passed}/{total} {error}\n".encode())
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        exit_now(0)


if __name__ == "__main__":
    main()
