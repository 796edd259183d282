"""A GTP client over a subprocess, and GnuGo as an opponent (``gnugo --mode gtp --level L --chinese-rules``).

Debian installs GnuGo in ``/usr/games``, which is often not on ``PATH``; :func:`find_gnugo` looks there too.
The client also drives our own engine (``go-baseline gtp``) in the round-trip test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GnuGo", "GtpClient", "GtpError", "find_gnugo"]

_DEBIAN_GAMES = Path("/usr/games/gnugo")


def find_gnugo() -> str | None:
    """Path of the ``gnugo`` binary (``PATH``, then ``/usr/games/gnugo``), or None."""
    found = shutil.which("gnugo")
    if found:
        return found
    return str(_DEBIAN_GAMES) if _DEBIAN_GAMES.is_file() and os.access(_DEBIAN_GAMES, os.X_OK) else None


class GtpError(RuntimeError):
    """The engine answered ``? message`` or died."""


class GtpClient:
    """Send GTP commands to an engine subprocess; :meth:`send` returns the text after ``=``."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )

    def send_raw(self, command: str) -> tuple[bool, str]:
        """``(ok, text)`` for one command line; raises GtpError when the engine has died."""
        if self.proc.poll() is not None:
            raise GtpError(f"engine {self.argv[0]} exited with code {self.proc.returncode}")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.strip() + "\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                raise GtpError(f"engine {self.argv[0]} closed its output after {command!r}")
            line = line.rstrip("\r\n")
            if line == "" and lines:
                break
            if line or lines:
                lines.append(line)
        text = "\n".join(lines)
        if text[:1] not in "=?":
            raise GtpError(f"malformed GTP reply to {command!r}: {text!r}")
        ok = text[0] == "="
        body = text[1:]
        # an optional numeric id follows '=' / '?' directly ("=12 C3"); the response follows a space
        i = 0
        while i < len(body) and body[i].isdigit():
            i += 1
        body = body[i:].strip()
        return ok, body

    def send(self, command: str) -> str:
        ok, text = self.send_raw(command)
        if not ok:
            raise GtpError(f"{command!r} failed: {text}")
        return text

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(GtpError, OSError, BrokenPipeError):
                self.send_raw("quit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> GtpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GnuGo(GtpClient):
    """GnuGo in GTP mode with Chinese (area) rules at ``level`` (0–10).

    ``never_resign`` (default) passes ``--never-resign`` so that every game is played out and scored: a match
    that asks "how often does Black take all 25 points" needs a final count, not a resignation.
    """

    def __init__(
        self,
        level: int = 10,
        *,
        binary: str | None = None,
        seed: int | None = None,
        never_resign: bool = True,
    ) -> None:
        path = binary or find_gnugo()
        if path is None:
            raise FileNotFoundError(
                "gnugo not found on PATH or in /usr/games; install it: apt-get install gnugo"
            )
        if not 0 <= level <= 10:
            raise ValueError(f"GnuGo level must be in [0, 10], got {level}")
        argv = [path, "--mode", "gtp", "--level", str(level), "--chinese-rules"]
        if never_resign:
            argv.append("--never-resign")
        if seed is not None:
            argv += ["--seed", str(seed)]
        super().__init__(argv)
        self.level = level
