"""The verifier subcommands of ``llm-rl`` (dispatched by ``llm_rl.cli``): ``tasks``, ``make-dataset``, ``verify``.

    llm-rl tasks [NAME]                                            list verifiers (or describe one)
    llm-rl make-dataset NAME --n N --seed S [--out DIR] [--split train|test] [--difficulty k=v ...]
    llm-rl verify --verifier NAME --input completions.jsonl [--timeout S] [--quiet]

Each returns an exit status: 0 on success, 2 on bad input (with an ``error:`` line naming the problem).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from relabel_rl.config import docstring_text
from verifiers.containment import ContainedVerifier
from verifiers.registry import VerifierInfo, VerifierRegistryError, describe, load, read_source

__all__ = ["cmd_make_dataset", "cmd_tasks", "cmd_verify"]


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_tasks(argv: list[str]) -> int:
    """List every verifier (plugins read from their source, not imported), or describe one (imported)."""
    parser = argparse.ArgumentParser(
        prog="llm-rl tasks",
        description="List available verifiers / task generators. Plugins are described from their source "
        "text, without importing them; name one verifier to load it and see its knobs and an example row.",
    )
    parser.add_argument("name", nargs="?", help="a verifier to describe in full (this imports it)")
    args = parser.parse_args(argv)
    try:
        infos = describe()
    except VerifierRegistryError as error:
        return _error(str(error))
    if args.name is not None:
        return _describe_one(args.name, infos)
    rows = [("name", "source", "step checks", "generator", "description")]
    for info in infos:
        rows.append(_listing_row(info))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    if any(info.source == "plugin" for info in infos):
        print("\n(plugins are described from their source, not imported; `llm-rl tasks NAME` loads one)")
    return 0


def _yes_no(flag: bool | None) -> str:
    return "?" if flag is None else "yes" if flag else "no"


def _listing_row(info: VerifierInfo) -> tuple[str, str, str, str, str]:
    if info.source == "built-in":  # our own modules, imported by the registry anyway
        verifier = load(info.name)
        summary = docstring_text(type(verifier).__doc__ or "").splitlines()
        return (
            info.name,
            "built-in",
            _yes_no(verifier.has_step_checks),
            _yes_no(verifier.has_generator),
            summary[0] if summary else "",
        )
    source = f"plugin ({info.distribution})" if info.distribution else "plugin"
    found = read_source(info.target)
    if found is None:
        return (info.name, source, "?", "?", f"{info.target} (source not readable without importing it)")
    description = docstring_text(found.description)
    return (info.name, source, _yes_no(found.step_checks), _yes_no(found.generator), description)


def _describe_one(name: str, infos: list[VerifierInfo]) -> int:
    try:
        verifier = load(name)
    except Exception as error:  # a plugin that fails to import is reported, with what failed
        return _error(f"cannot load verifier {name!r}: {type(error).__name__}: {error}")
    known = {info.name: info for info in infos}.get(name)
    origin = (
        f"{known.source} {known.target}" + (f" from {known.distribution}" if known.distribution else "")
        if known
        else name
    )
    knobs = verifier.difficulty_knobs()
    lines = [
        f"{verifier.name}: {origin}",
        f"  class          {type(verifier).__module__}.{type(verifier).__qualname__}",
        f"  trusted        {verifier.trusted} ("
        + ("scored in-process" if verifier.trusted else "scored in a worker process with a deadline")
        + ")",
        f"  step delimiter {verifier.step_delimiter!r}",
        f"  step checks    {_yes_no(verifier.has_step_checks)}",
        f"  generator      {_yes_no(verifier.has_generator)}",
        "  knobs          " + (", ".join(f"{k}={v!r}" for k, v in knobs.items()) or "none"),
    ]
    doc = docstring_text(type(verifier).__doc__ or "")
    if doc:
        lines += ["", *("  " + line for line in doc.splitlines())]
    if verifier.has_generator:
        try:
            row = verifier.generate(1, seed=0, split="train")[0]
        except Exception as error:  # e.g. a hub-backed generator offline
            lines += ["", f"  (no example row: {type(error).__name__}: {error})"]
        else:
            lines += ["", "  example row (seed 0, train):"]
            lines += [f"    {key}: {value!r}" for key, value in row.items()]
    print("\n".join(lines))
    return 0


def _parse_difficulty(pairs: list[str]) -> dict[str, Any]:
    knobs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--difficulty expects key=value, got {pair!r}")
        try:
            value = ast.literal_eval(raw.strip())  # literals only (numbers, strings); never evaluates code
        except (ValueError, SyntaxError):
            value = raw.strip()
        knobs[key.strip()] = value
    return knobs


DATASETS_DIR = Path("runs") / "datasets"  # git-ignored, like every run output


def _default_out(name: str, split: str, n: int, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return DATASETS_DIR / f"{safe}-{split}-n{n}-seed{seed}"


def _unsafe_target(out: Path) -> str | None:
    """Why ``out`` must not be written (a file, or a folder of other things), or None."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file"
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset_info.json").exists():
        return (
            f"--out {out} is a non-empty folder that holds no saved dataset; refusing to write into it "
            "(name a new folder, or omit --out for runs/datasets/...)"
        )
    return None


def cmd_make_dataset(argv: list[str]) -> int:
    """Generate ``--n`` rows with a verifier's generator and save them with ``Dataset.save_to_disk``."""
    parser = argparse.ArgumentParser(
        prog="llm-rl make-dataset", description="Generate a task dataset to disk."
    )
    parser.add_argument("name", help="verifier name (see `llm-rl tasks`) or module:attr")
    parser.add_argument("--n", type=int, required=True, help="number of rows")
    parser.add_argument("--seed", type=int, required=True, help="example i is seeded with seed + i")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory for Dataset.save_to_disk (default: runs/datasets/NAME-SPLIT-nN-seedS; "
        "runs/ and data/ are git-ignored); a previous dataset there is replaced, other files are not",
    )
    parser.add_argument("--split", choices=("train", "test"), default="train", help="disjoint prompt pools")
    parser.add_argument("--difficulty", nargs="*", default=[], metavar="KEY=VALUE", help="generator knobs")
    args = parser.parse_args(argv)
    if args.n < 0:
        return _error(f"--n must be >= 0, got {args.n}")
    out = args.out if args.out is not None else _default_out(args.name, args.split, args.n, args.seed)
    problem = _unsafe_target(out)
    if problem:
        return _error(problem)
    try:
        verifier = load(args.name)
        difficulty = _parse_difficulty(args.difficulty)
        dataset = verifier.generate(args.n, seed=args.seed, split=args.split, **difficulty)
    except (VerifierRegistryError, ValueError, TypeError, NotImplementedError) as error:
        return _error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(out))
    print(out.resolve())
    return 0


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
                raise ValueError(
                    f"{path}:{number}: each row needs a string 'completion' plus the example columns"
                )
            rows.append(row)
    return rows


def cmd_verify(argv: list[str]) -> int:
    """Score ``completion`` of each JSONL row (the other keys are the example); print scores and a summary."""
    parser = argparse.ArgumentParser(prog="llm-rl verify", description="Score completions from a JSONL file.")
    parser.add_argument("--verifier", required=True, help="verifier name or module:attr")
    parser.add_argument("--input", type=Path, required=True, help="JSONL rows: completion + example columns")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per sample in a worker process (default: in-process "
        "for trusted built-ins, 5 s in a worker for plugins)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        return _error(f"no such input file: {args.input}")
    try:
        verifier = load(args.verifier)
        rows = _read_jsonl(args.input)
    except (VerifierRegistryError, ValueError, TypeError) as error:
        return _error(str(error))
    contained = ContainedVerifier(verifier, timeout="auto" if args.timeout is None else args.timeout)
    scores, failures = [], Counter()
    with contained:
        if not args.quiet:
            print("index\tscore\tfailure")
        for index, row in enumerate(rows):
            example = {k: v for k, v in row.items() if k != "completion"}
            outcome = contained.score_outcome(row["completion"], example)
            scores.append(outcome.score)
            if outcome.failure:
                failures[outcome.failure] += 1
            if not args.quiet:
                print(f"{index}\t{outcome.score:g}\t{outcome.failure or ''}")
    mean = sum(scores) / len(scores) if scores else float("nan")
    summary = {"verifier": contained.name, "n": len(scores), "mean": mean, "failures": dict(failures)}
    print("summary: " + json.dumps(summary))
    return 0
