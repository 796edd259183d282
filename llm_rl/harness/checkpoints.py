"""Checkpoints: written atomically, verified on load, loaded without unpickling code, the newest two kept.

A checkpoint is a directory ``RUN_DIR/checkpoints/checkpoint-<step>`` (the name TRL uses too, so both the
hand-written loop's and GRPO's checkpoints are found, verified and pruned by the same code). Its last file is
``harness_state.json``: the harness's own state (budget counters, evaluation schedule, verifier failure counts,
prompt cursor, RNG states as JSON) and a manifest of every other file's size. Verification reads it all back:

* the manifest must list files that exist with the recorded sizes (a truncated or missing file is named);
* JSON files must parse; ``.safetensors`` files are read with safetensors (no code can run);
* ``.pt``/``.pth`` files (optimizer and scheduler states, TRL's RNG file) load with
  ``torch.load(weights_only=True)``, which refuses a pickle that would import or call anything.

On resume the newest checkpoint that verifies is used; each one that does not is renamed ``<name>.corrupt``
(kept for inspection, out of the way of later saves) with a one-line warning naming the bad file. After every
save only the newest `KEEP` checkpoints remain, so one bad write never leaves a run without a fallback.

The hand-written loop's checkpoint holds ``trainable.safetensors`` (the trainable parameters: the whole LM or
the LoRA adapter, plus the value head), ``optimizer.pt`` (the optimizer's state dict, tensors and numbers only),
``rng.safetensors`` (the torch RNG states) and ``harness_state.json``; it is written into ``<name>.tmp`` and
renamed into place, so a kill mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_pt_utils import safe_globals

from relabel_rl.rundir import newest_readable

__all__ = [
    "KEEP",
    "STATE_FILE",
    "CheckpointError",
    "LoopCheckpoint",
    "checkpoint_path",
    "list_checkpoints",
    "newest_good",
    "prune",
    "read_loop_checkpoint",
    "restore_rng",
    "rng_state",
    "save_loop_checkpoint",
    "verify",
    "write_state",
]

STATE_FILE = "harness_state.json"
KEEP = 2
_PREFIX = "checkpoint-"
_NEVER_LOADED = {"training_args.bin"}  # TRL/transformers write it, resuming never reads it


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


def checkpoint_path(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step}"


def list_checkpoints(root: Path) -> list[Path]:
    """The ``checkpoint-<step>`` directories under ``root``, newest (highest step) first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        suffix = p.name.removeprefix(_PREFIX)
        if p.is_dir() and p.name.startswith(_PREFIX) and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


# ---------------------------------------------------------------------------------------------------------------
# The state file and verification


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``harness_state.json`` (``state`` plus the size manifest of every other file), atomically, last."""
    files = {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in (STATE_FILE, STATE_FILE + ".tmp")
    }
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({**state, "files": files}, indent=2))
    tmp.replace(directory / STATE_FILE)


def verify(directory: Path) -> dict[str, Any]:
    """Read ``directory`` back as the module docstring says; return its harness state.

    Raises:
      CheckpointError: naming the first file that is missing, truncated, unparsable or unsafe to load.
    """
    state = _read_json(directory / STATE_FILE)
    for path in _check_sizes(directory, state):
        if path.suffix == ".json":
            _read_json(path)
        elif path.suffix == ".safetensors":
            _read_safetensors(path)
        elif path.suffix in (".pt", ".pth", ".bin") and path.name not in _NEVER_LOADED:
            _safe_torch_load(path)
    return state


def _check_sizes(directory: Path, state: dict[str, Any]) -> list[Path]:
    """The manifest's files, each checked to exist with its recorded size."""
    paths = []
    for name, size in state.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(f"{path} is {path.stat().st_size} bytes, {size} when saved (truncated?)")
        paths.append(path)
    return paths


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (a save was interrupted?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {_first_line(e)})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {_first_line(e)})") from None


def _safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only — a pickle that would
    import or call anything (``os.system``, ...) is refused before it runs. NumPy arrays (in TRL's RNG file) are
    allowed the way transformers allows them when it resumes."""
    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe content; RuntimeError/EOFError for damage
        raise CheckpointError(f"{path} does not load safely ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:160]


def newest_good(
    root: Path, *, read: Callable[[Path], Any] = verify, warn: Callable[[str], None] = print
) -> tuple[Path, Any] | None:
    """The newest checkpoint under ``root`` that ``read`` accepts, with what it read; None when none does.

    Each rejected checkpoint is renamed ``<name>.corrupt`` and reported by ``warn`` in one line naming the bad
    file and what the run falls back to.
    """
    return newest_readable(list_checkpoints(root), read, errors=CheckpointError, warn=warn)


def prune(root: Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in list_checkpoints(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# RNG states as tensors and JSON


def rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a run draws from: torch states as tensors, Python's and NumPy's as JSON-ready lists."""
    tensors = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {
        "python": [version, list(words), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }


def restore_rng(
    generator: torch.Generator, tensors: dict[str, torch.Tensor], json_state: dict[str, Any]
) -> None:
    generator.set_state(tensors["generator"])
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, words, gauss = json_state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = json_state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------------------------
# The hand-written loop's checkpoint


@dataclass(frozen=True)
class LoopCheckpoint:
    """A verified checkpoint of the hand-written loop, read into memory (nothing applied yet)."""

    path: Path
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]


def save_loop_checkpoint(
    root: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write ``checkpoint-<step>`` (module docstring) atomically and prune to the newest `KEEP`."""
    target = checkpoint_path(root, step)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors")
    )
    torch.save(optimizer, tmp / "optimizer.pt")
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    write_state(tmp, state)
    shutil.rmtree(target, ignore_errors=True)  # a re-save of the same step (the final one after a resume)
    tmp.rename(target)
    prune(root)
    return target


def read_loop_checkpoint(path: Path) -> LoopCheckpoint:
    """Read and verify a loop checkpoint (raises `CheckpointError` naming the bad file)."""
    state = _read_json(path / STATE_FILE)
    _check_sizes(path, state)
    return LoopCheckpoint(
        path=path,
        trainable=_read_safetensors(path / "trainable.safetensors"),
        optimizer=_safe_torch_load(path / "optimizer.pt"),
        rng=_read_safetensors(path / "rng.safetensors"),
        state=state,
    )
