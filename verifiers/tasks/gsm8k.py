"""``gsm8k``: GSM8K grade-school word problems from the hub (``openai/gsm8k``), scored by math-verify.

The ``math`` verifier scores GSM8K-style answers but has no generator (it expects a dataset). The real-model
recipes (``recipes/llm/*gsm8k*.yaml``) need one behind the ordinary ``generate`` interface, so that every arm, the
warm start and `compare` load GSM8K exactly as they load a synthetic task. This module is that bridge; it is
named by path (``task.verifier: verifiers.tasks.gsm8k:GSM8K``) rather than registered, so `llm-rl tasks` and
offline tests never touch the hub.

Rows: ``prompt`` is the question plus a one-line format instruction; ``solution`` is GSM8K's own reasoning, one
step per line, with the ``<<48/2=24>>`` calculator annotations removed and the ``#### 72`` line replaced by
``Answer: 72`` — the format every arm's step splitter and terminal-step check expect, and the warm start's SFT
target; ``answer`` is the gold number. Splits are GSM8K's own (7,473 train, 1,319 test); ``generate(n, seed=s)``
takes ``n`` rows in a permutation of the split seeded by ``s`` (deterministic, so every arm sees the same rows).

Departure from the usual GSM8K protocol: no few-shot prompt and no chat template — the SFT warm start teaches the
format, as on the synthetic tasks.
"""

from __future__ import annotations

import random
import re
from typing import Any

from verifiers.base import ANSWER_PREFIX
from verifiers.tasks.math_answer import MathAnswer

__all__ = ["GSM8K", "gsm8k_row"]

HUB_DATASET = ("openai/gsm8k", "main")
INSTRUCTION = f"Solve step by step, one step per line, and end with '{ANSWER_PREFIX} <number>'."
_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_row(question: str, answer: str) -> dict[str, Any]:
    """One task row from a GSM8K record (``question``, ``answer`` = reasoning + ``#### <number>``)."""
    if "####" not in answer:
        raise ValueError(f"not a GSM8K answer (no '####' line): {answer[:80]!r}")
    reasoning, gold = answer.rsplit("####", 1)
    gold = gold.strip().replace(",", "")
    steps = [_CALCULATOR.sub("", line).strip() for line in reasoning.strip().splitlines()]
    steps = [s for s in steps if s]
    solution = "\n".join([*steps, f"{ANSWER_PREFIX} {gold}"])
    return {
        "prompt": f"{question.strip()}\n{INSTRUCTION}\n",
        "answer": gold,
        "solution": solution,
        "num_steps": len(steps) + 1,
    }


class GSM8K(MathAnswer):
    """`MathAnswer` scoring plus a generator over GSM8K from the hub (needs network or a warm HF cache)."""

    name = "gsm8k"

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        """``n`` rows of GSM8K's ``split`` in a permutation seeded by ``seed``. Difficulty knobs:
        ``max_steps`` (int, 0 = any): keep only problems whose gold solution has at most that many lines."""
        import datasets

        unknown = set(difficulty) - {"max_steps"}
        if unknown:
            raise ValueError(f"gsm8k: unknown difficulty knobs {sorted(unknown)}; valid: ['max_steps']")
        max_steps = int(difficulty.get("max_steps", 0) or 0)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        source = datasets.load_dataset(*HUB_DATASET, split=split)
        order = list(range(len(source)))
        random.Random(f"gsm8k:{split}:{seed}").shuffle(order)
        rows: list[dict[str, Any]] = []
        for i in order:
            row = gsm8k_row(source[i]["question"], source[i]["answer"])
            if max_steps and row["num_steps"] > max_steps:
                continue
            rows.append(row)
            if len(rows) == n:
                break
        if len(rows) < n:
            raise ValueError(
                f"gsm8k: only {len(rows)} {split} problems with max_steps={max_steps}, asked for {n}"
            )
        return datasets.Dataset.from_list(rows)

    @property
    def has_generator(self) -> bool:
        return True
