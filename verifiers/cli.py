"""The verifier subcommands of ``llm-rl`` (dispatched by ``llm_rl.cli``): ``tasks``, ``make-dataset``, ``verify``.

    llm-rl tasks                                                   list verifiers and what they offer
    llm-rl make-dataset NAME --n N --seed S --out DIR [--split train|test] [--difficulty k=v ...]
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

from verifiers.containment import ContainedVerifier
from verifiers.registry import VerifierRegistryError, describe, load

__all__ = ["cmd_make_dataset", "cmd_tasks", "cmd_verify"]


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_tasks(argv: list[str]) -> int:
    """List every verifier: name, source (built-in / plugin), step checks, generator, one-line description."""
    parser = argparse.ArgumentParser(
        prog="llm-rl tasks", description="List available verifiers / task generators."
    )
    parser.parse_args(argv)
    try:
        infos = describe()
    except VerifierRegistryError as error:
        return _error(str(error))
    rows = [("name", "source", "step checks", "generator", "description")]
    for info in infos:
        source = info.source if info.distribution is None else f"plugin ({info.distribution})"
        try:
            verifier = load(info.name)
        except Exception as error:  # a broken plugin is reported, not fatal to the listing
            rows.append((info.name, source, "?", "?", f"cannot load: {type(error).__name__}: {error}"))
            continue
        summary = (type(verifier).__doc__ or "").strip().splitlines()
        rows.append(
            (
                info.name,
                source,
                "yes" if verifier.has_step_checks else "no",
                "yes" if verifier.has_generator else "no",
                summary[0] if summary else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
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


def cmd_make_dataset(argv: list[str]) -> int:
    """Generate ``--n`` rows with a verifier's generator and save them with ``Dataset.save_to_disk``."""
    parser = argparse.ArgumentParser(
        prog="llm-rl make-dataset", description="Generate a task dataset to disk."
    )
    parser.add_argument("name", help="verifier name (see `llm-rl tasks`) or module:attr")
    parser.add_argument("--n", type=int, required=True, help="number of rows")
    parser.add_argument("--seed", type=int, required=True, help="example i is seeded with seed + i")
    parser.add_argument("--out", type=Path, required=True, help="output directory (Dataset.save_to_disk)")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="disjoint prompt pools")
    parser.add_argument("--difficulty", nargs="*", default=[], metavar="KEY=VALUE", help="generator knobs")
    args = parser.parse_args(argv)
    if args.n < 0:
        return _error(f"--n must be >= 0, got {args.n}")
    try:
        verifier = load(args.name)
        difficulty = _parse_difficulty(args.difficulty)
        dataset = verifier.generate(args.n, seed=args.seed, split=args.split, **difficulty)
    except (VerifierRegistryError, ValueError, TypeError, NotImplementedError) as error:
        return _error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(args.out))
    print(args.out.resolve())
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
