"""The harness that runs *inside* the sandbox child: ``python -I -S -c <this file's source>``.

It is passed to the interpreter as source (never imported by the parent) and reads its job, a ``marshal``-ed
dict written by the trusted parent, from stdin. Order matters:

1. read the whole job and close stdin, before any candidate code exists in the process;
2. set the resource limits the job names (the bubblewrap backend sets them here: inside the sandbox's user
   namespace ``RLIMIT_NPROC`` counts only this sandbox's processes), then the in-process guard when asked;
3. run the solution as the module ``solution`` (this is the sandbox: candidate code runs here and only here);
4. run the job's steps in the solution's namespace: ``exec`` a setup statement, or ``eval`` a *probe* (an
   expression the parent needs the value of, e.g. ``add_k(3)``) and report the value;
5. write one JSON line per step to the result fd, then a ``done`` line, and ``os._exit`` at once.

The child decides nothing: it never sees the tests' expected values (the parent kept them) and there is no pass
token to steal. Code that tampers with this harness (frames, ``sys.modules``, the result fd) can only change the
values it reports for its own function calls, which it could have returned honestly anyway. Values are encoded
by their builtin type (subclasses by their builtin content, so a subclass's ``__eq__`` never reaches the
comparison); anything else is reported as an opaque type name, which compares equal to nothing.

Only builtin modules are imported (``marshal``, ``_json``, ``resource``), so the harness adds ~1 ms to a run.
"""

import marshal
import os
import sys

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # a CPython without the C accelerator
    from json.encoder import py_encode_basestring_ascii as _quote

MAX_DEPTH = 64  # nesting of a reported value
MAX_ITEMS = 100_000  # elements of one reported value


class _TooBig(Exception):
    pass


def _float(x):
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _object(key, value_json):
    """The JSON text ``{"key": value}`` for a JSON-encoded ``value_json``."""
    return "{" + _quote(key) + ":" + value_json + "}"


def encode(value, depth=0, budget=None):
    """JSON text of a value, tagged by builtin type: tuple {"t"}, set {"s"}, frozenset {"fs"}, dict {"d"},
    bytes {"b"}, complex {"c"}, other {"?": type name}. Builtin methods are called unbound, so a subclass's
    overrides never run (an ``int`` subclass is reported as its integer, a ``list`` subclass as its items)."""
    budget = budget if budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        raise _TooBig
    if value is None:
        return "null"
    if value is True or value is False:  # bool cannot be subclassed
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(int.__int__(value))
    if isinstance(value, float):
        return _float(float.__float__(value))
    if isinstance(value, str):
        return _quote(str.__str__(value))
    if isinstance(value, complex):
        parts = _float(complex.real.__get__(value)), _float(complex.imag.__get__(value))
        return _object("c", "[" + ",".join(parts) + "]")
    if isinstance(value, (bytes, bytearray)):
        return _object("b", _quote(bytes(value).hex()))
    if isinstance(value, dict):
        pairs = (
            "[" + encode(k, depth + 1, budget) + "," + encode(v, depth + 1, budget) + "]"
            for k, v in dict.items(value)
        )
        return _object("d", "[" + ",".join(pairs) + "]")
    for kind, tag in ((list, None), (tuple, "t"), (set, "s"), (frozenset, "fs")):
        if isinstance(value, kind):
            items = "[" + ",".join(encode(v, depth + 1, budget) for v in kind.__iter__(value)) + "]"
            return items if tag is None else _object(tag, items)
    return _object("?", _quote(type(value).__name__))


def _describe(error):
    return _quote(f"{type(error).__name__}: {error}"[:300])


def _step(index, kind, source, namespace):
    """The report line of one step: ``{"i": index, "ok": true}``, ``..."v": value}`` or ``..."e": error}``."""
    head = '{"i":' + str(index) + ","
    try:
        if kind == "exec":
            exec(compile(source, "tests.py", "exec"), namespace)
            return head + '"ok":true}'
        return head + '"v":' + encode(eval(compile(source, "tests.py", "eval"), namespace)) + "}"
    except _TooBig:
        return head + '"e":"ValueError: the value is too large to report"}'
    except BaseException as error:  # SystemExit too
        return head + '"e":' + _describe(error) + "}"


def main():
    job = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    write, exit_now, result_fd = os.write, os._exit, job["result_fd"]
    if job["rlimits"]:
        import resource

        for name, value in job["rlimits"]:
            resource.setrlimit(getattr(resource, name), (value, value))
    if job["guard"] or job["block_network"]:
        _guard(job["guard"], job["block_network"])

    def report(text):
        write(result_fd, (text + "\n").encode())

    module = type(sys)("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    namespace = vars(module)
    try:
        exec(compile(job["code"], "solution.py", "exec"), namespace)
    except BaseException as error:  # SystemExit too: exiting is not passing
        report(_object("load", _describe(error)))
        exit_now(0)
    report('{"load":null}')
    for index, (kind, source) in enumerate(job["steps"]):
        report(_step(index, kind, source, namespace))
    report('{"done":true}')
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        exit_now(0)


# --- the in-process guard (defence in depth; the rlimit fallback's only filesystem protection) -------------


def _disabled(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the sandbox")

    return refuse


def _confine_writes(cwd):
    """Refuse to open files for writing outside the working directory (builtins.open, io.open, os.open)."""
    import builtins
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


def _guard(guard, block_network):
    if guard:
        import shutil
        import subprocess

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


if __name__ == "__main__":
    main()
