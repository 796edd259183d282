"""``long_arithmetic``: multi-digit addition and multiplication with a written scratchpad, every line checkable.

Addition ``Compute 4821 + 977.\\n``, one line per column from the right (digit, digit, carry in)::

    1 + 7 + 0 = 8
    2 + 7 + 0 = 9
    8 + 9 + 0 = 17
    4 + 0 + 1 = 5
    Answer: 5798

Multiplication ``Compute 347 * 25.\\n``: one partial product per non-zero digit of the second factor, then a
running sum::

    347 * 5 = 1735
    347 * 20 = 6940
    1735 + 6940 = 8675
    Answer: 8675

A step is checked against the model's *own* earlier lines (the carry of the previous column line, the partial
products and running sum it wrote), so one slip is one wrong step rather than a cascade.
"""

from __future__ import annotations

import random
import re

from verifiers.base import Verifier, final_answer
from verifiers.registry import register
from verifiers.tasks.equation import parse_equation, parse_int

__all__ = ["LongArithmetic"]

_COLUMN = re.compile(r"^\s*(\d)\s*\+\s*(\d)\s*\+\s*(\d)\s*=\s*(\d{1,2})\s*$")
MAX_DIGITS = 18


def _digits(value: int) -> list[int]:
    """Least-significant first."""
    return [int(d) for d in reversed(str(value))]


def _multipliers(b: int) -> list[int]:
    """The non-zero place values of ``b``: 205 -> [5, 200]."""
    return [d * 10**i for i, d in enumerate(_digits(b)) if d]


def scratchpad(a: int, op: str, b: int) -> list[str]:
    """The gold scratchpad lines (without the answer line)."""
    if op == "+":
        lines, carry = [], 0
        da, db = _digits(a), _digits(b)
        for i in range(max(len(da), len(db))):
            x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
            lines.append(f"{x} + {y} + {carry} = {x + y + carry}")
            carry = (x + y + carry) // 10
        return lines
    partials = [a * m for m in _multipliers(b)]
    lines = [f"{a} * {m} = {p}" for m, p in zip(_multipliers(b), partials)]
    total = partials[0]
    for partial in partials[1:]:
        lines.append(f"{total} + {partial} = {total + partial}")
        total += partial
    return lines


@register
class LongArithmetic(Verifier):
    """Multi-digit addition/multiplication with a written scratchpad, each line checkable.

    Rows carry ``a`` (int), ``op`` (``"+"`` or ``"*"``) and ``b`` (int).
    """

    name = "long_arithmetic"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        answer = parse_int(final_answer(completion))
        return float(answer is not None and answer == int(example["answer"]))

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if self.is_terminal_step(step):
            return self.score(step, example) == 1.0
        if any(self.is_terminal_step(previous) for previous in previous_steps):
            return False
        a, op, b = int(example["a"]), example["op"], int(example["b"])
        gold = scratchpad(a, op, b)
        k = len(previous_steps)
        if k >= len(gold):
            return False
        if op == "+":
            return self._check_column(a, b, previous_steps, step, gold)
        multipliers = _multipliers(b)
        equation = parse_equation(step)
        if equation is None or not equation.holds:
            return False
        if k < len(multipliers):
            return equation.op == "*" and equation.left == a and equation.right == multipliers[k]
        # a running-sum line: (previous running total, or the first partial) + the next partial
        written = [parse_equation(s) for s in previous_steps]
        partials = [
            w.result if w is not None else a * m for w, m in zip(written[: len(multipliers)], multipliers)
        ]
        j = k - len(multipliers)
        previous_sum = written[k - 1] if j > 0 else None
        left = partials[0] if j == 0 else (previous_sum.result if previous_sum is not None else None)
        return equation.op == "+" and equation.left == left and equation.right == partials[j + 1]

    @staticmethod
    def _check_column(a: int, b: int, previous_steps: list[str], step: str, gold: list[str]) -> bool:
        match = _COLUMN.match(step)
        if match is None:
            return False
        k = len(previous_steps)
        da, db = _digits(a), _digits(b)
        x, y = (da[k] if k < len(da) else 0), (db[k] if k < len(db) else 0)
        carry = 0
        if k > 0:
            before = _COLUMN.match(previous_steps[-1]) or _COLUMN.match(gold[k - 1])
            carry = int(before.group(4)) // 10 if before else 0
        written = [int(g) for g in match.groups()]
        return written == [x, y, carry, x + y + carry]

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        """Difficulty knobs: ``op`` (``add``, ``mul`` or ``mixed``), ``min_digits``, ``max_digits``,
        ``max_multiplier_digits`` (digits of the second factor of a product)."""
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    @staticmethod
    def make_example(
        rng: random.Random,
        *,
        op: str = "mixed",
        min_digits: int = 2,
        max_digits: int = 4,
        max_multiplier_digits: int = 2,
    ) -> dict:
        if op not in ("add", "mul", "mixed"):
            raise ValueError(f"long_arithmetic: op must be 'add', 'mul' or 'mixed', got {op!r}")
        if not 1 <= min_digits <= max_digits <= MAX_DIGITS or not 1 <= max_multiplier_digits <= MAX_DIGITS:
            raise ValueError(f"long_arithmetic: need 1 <= min_digits <= max_digits <= {MAX_DIGITS}")
        symbol = {"add": "+", "mul": "*"}.get(op) or rng.choice("+*")

        def number(digits: int) -> int:
            return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

        a = number(rng.randint(min_digits, max_digits))
        b_digits = min(rng.randint(min_digits, max_digits), max_multiplier_digits) if symbol == "*" else None
        b = number(b_digits) if b_digits else number(rng.randint(min_digits, max_digits))
        if symbol == "*" and b == 0:
            b = 1
        result = a + b if symbol == "+" else a * b
        lines = [*scratchpad(a, symbol, b), f"Answer: {result}"]
        return {
            "prompt": f"Compute {a} {symbol} {b}.\n",
            "answer": str(result),
            "solution": "\n".join(lines),
            "num_steps": len(lines),
            "a": a,
            "op": symbol,
            "b": b,
        }
