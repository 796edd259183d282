"""Checks of the Python environment an entry point runs in: is ``import verifiers`` *our* ``verifiers``?

relabel-rl's verifier package is the top-level ``verifiers`` (the project layout asks for it). PrimeIntellect's
popular ``verifiers`` package (PyPI ``verifiers``) has the same import name, so the two cannot share one
environment: whichever comes first on ``sys.path`` wins, and with non-editable installs one wheel overwrites the
other's ``verifiers/__init__.py``. Left alone, the clash surfaces far from its cause (``'task.verifier': module
'verifiers' has no attribute 'load'``, blaming the recipe). Entry points that need our ``verifiers`` call
:func:`foreign_verifiers` first and stop with its one message.

How ours is recognised, without importing (a foreign package may be slow to import, print, or fail):

* ``verifiers/__init__.py`` of relabel-rl assigns the marker ``__relabel_rl__ = True``; the file that
  ``import verifiers`` would execute (``importlib.util.find_spec``, which does not import a top-level package) must
  contain that assignment. When ``verifiers`` is already imported, the module's attribute is checked instead. A
  namespace package (a stray ``verifiers/`` folder without ``__init__.py``) has no file and is foreign too.
* No installed distribution other than relabel-rl may ship a top-level ``verifiers`` (from the installers'
  ``top_level.txt`` / ``RECORD``): after a non-editable install of both, ours may be the file in place while the
  other's modules are mixed into the same folder, and uninstalling either breaks the other.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import re
import signal
import sys
from pathlib import Path

__all__ = ["MARKER", "destroy_process_group_at_exit", "foreign_verifiers", "quiet_broken_pipe"]

MARKER = "__relabel_rl__"
OWN_DISTRIBUTION = "relabel-rl"
_MARKER_LINE = re.compile(rf"^{MARKER}\s*=\s*True\b", re.MULTILINE)
FIX = (
    "relabel-rl's own package is also named 'verifiers' and the two cannot share one Python environment. "
    "Use a separate environment for relabel-rl: `make setup` creates one in .venv (or `python -m venv` and "
    "`pip install -e .`), and run `llm-rl` from it."
)


def _describe(name: str, where: str | None) -> str:
    version = None
    if name != OWN_DISTRIBUTION:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            version = importlib.metadata.version(name)
    label = f"'{name}' {version}" if version else f"'{name}'"
    return f"{label} at {where}" if where else label


def _other_distributions() -> list[str]:
    try:
        owners = importlib.metadata.packages_distributions().get("verifiers", [])
    except Exception:  # a broken dist-info elsewhere must not stop a healthy environment
        return []
    seen = []
    for name in owners:
        if name.replace("_", "-").lower() != OWN_DISTRIBUTION and name not in seen:
            seen.append(name)
    return seen


def _module_is_ours() -> tuple[bool, str | None]:
    """(is ours, where the ``verifiers`` that ``import verifiers`` gives comes from)."""
    loaded = sys.modules.get("verifiers")
    if loaded is not None:
        where = getattr(loaded, "__file__", None) or str(list(getattr(loaded, "__path__", [])))
        return getattr(loaded, MARKER, False) is True, where
    try:
        spec = importlib.util.find_spec("verifiers")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return False, None
    if not spec.has_location or spec.origin is None:  # a namespace package: a bare `verifiers/` folder
        return False, ", ".join(spec.submodule_search_locations or []) or "a namespace package"
    try:
        text = Path(spec.origin).read_text(errors="replace")
    except OSError:
        return False, spec.origin
    return bool(_MARKER_LINE.search(text)), str(Path(spec.origin).parent)


def foreign_verifiers() -> str | None:
    """None when ``import verifiers`` is relabel-rl's own package and nothing else claims the name; otherwise
    one message naming what was found (path, distribution, version) and the fix."""
    ours, where = _module_is_ours()
    others = _other_distributions()
    if where is None:
        return (
            "relabel-rl's 'verifiers' package cannot be found: the installation is incomplete. "
            "Reinstall it with `make setup` (or `pip install -e .` in the checkout)."
        )
    if ours and not others:
        return None
    if not ours:
        found = _describe(others[0], where) if len(others) == 1 else f"a package named 'verifiers' at {where}"
        return f"`import verifiers` finds {found}, not relabel-rl's verifiers. {FIX}"
    names = ", ".join(_describe(o, None) for o in others)
    return (
        f"another installed distribution, {names}, also provides the top-level package 'verifiers' "
        f"(relabel-rl's is at {where}; installed together, one overwrites the other's files). {FIX}"
    )


def quiet_broken_pipe() -> None:
    """Let a command piped into ``head`` end quietly, as Unix tools do: the default ``SIGPIPE`` action instead of
    Python's ``BrokenPipeError`` traceback (Python ignores ``SIGPIPE`` at start-up). For CLI entry points only."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def destroy_process_group_at_exit() -> None:
    """Have the process group destroyed on the way out of this process, while the interpreter is still whole.

    Call it where a process group has just been started (an ``accelerate launch`` worker); a no-op when torch was
    never imported or no group is started, and when already registered. A process that leaves without
    ``destroy_process_group`` tears gloo down during interpreter finalisation, where its worker threads may still
    hold work objects whose tensors reference Python; freeing them then needs the GIL of an interpreter being torn
    down, and the process now and then aborts (``terminate called without an active exception``, SIGABRT) after a
    run that had finished — the launcher then kills the other process and fails the launch. (torch asks callers to
    destroy the group before exit; a proposal to register this hook inside ``init_process_group`` was not merged:
    pytorch/pytorch#179291.) An ``atexit`` hook also covers ends by an exception, and needs no collective: each
    process frees only its own side, so a peer still working or already gone cannot make it hang.
    """
    global _DESTROY_REGISTERED
    dist = sys.modules.get("torch.distributed")
    if _DESTROY_REGISTERED or dist is None or not dist.is_available() or not dist.is_initialized():
        return
    atexit.register(_destroy_process_group)
    _DESTROY_REGISTERED = True


_DESTROY_REGISTERED = False


def _destroy_process_group() -> None:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()
