"""``chain_arithmetic``: a start value and k operations, one checkable line per operation. The quickstart task.

Prompt ``Start 12. Add 5, times 3, minus 4.\\n``; gold solution::

    12 + 5 = 17
    17 * 3 = 51
    51 - 4 = 47
    Answer: 47

Designed for a tiny character-level model: ASCII digits, ``+ - *``, spaces, newlines and a few words; values
stay in ``[0, max_value]`` (a ``*`` that would overflow or a ``-`` that would go negative is redrawn), so every
number is short. Every step is checkable: step ``k`` must apply the k-th operation to the value the previous
step produced (the model's own running value, so one slip is one wrong step, not a cascade of them).
"""

from __future__ import annotations

import random

from verifiers.base import Verifier, final_answer
from verifiers.registry import register
from verifiers.tasks.equation import parse_equation, parse_int

__all__ = ["ChainArithmetic"]

_WORDS = {"+": "add", "*": "times", "-": "minus"}


def parse_operations(text: str) -> list[tuple[str, int]]:
    """``"+5 *3 -4"`` -> ``[("+", 5), ("*", 3), ("-", 4)]`` (the ``operations`` column)."""
    return [(token[0], int(token[1:])) for token in text.split()]


@register
class ChainArithmetic(Verifier):
    """Start value + k operations (+ - *), one checkable line each; the quickstart task.

    Rows carry ``start`` (int) and ``operations`` (str, e.g. ``"+5 *3 -4"``).
    """

    name = "chain_arithmetic"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        answer = parse_int(final_answer(completion))
        return float(answer is not None and answer == int(example["answer"]))

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if self.is_terminal_step(step):
            return self.score(step, example) == 1.0
        operations = parse_operations(example["operations"])
        value = int(example["start"])
        done = 0
        for previous in previous_steps:
            if self.is_terminal_step(previous):
                return False  # nothing may follow the answer
            parsed = parse_equation(previous)
            if parsed is not None:
                value = parsed.result
            done += 1
        if done >= len(operations):
            return False
        equation = parse_equation(step)
        op, operand = operations[done]
        return (
            equation is not None
            and equation.left == value
            and equation.op == op
            and equation.right == operand
            and equation.holds
        )

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        """Difficulty knobs: ``min_steps``, ``max_steps`` (operations), ``min_operand``, ``max_operand``,
        ``max_start``, ``max_multiplier``, ``max_value`` (see :meth:`make_example`)."""
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    @staticmethod
    def make_example(
        rng: random.Random,
        *,
        min_steps: int = 2,
        max_steps: int = 4,
        min_operand: int = 1,
        max_operand: int = 9,
        max_start: int = 20,
        max_multiplier: int = 3,
        max_value: int = 200,
    ) -> dict:
        """One row. ``*`` draws its operand from ``[2, max_multiplier]`` (small products stay learnable)."""
        if not 1 <= min_steps <= max_steps:
            raise ValueError(
                f"chain_arithmetic: need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}"
            )
        if max_multiplier < 2:
            raise ValueError(f"chain_arithmetic: max_multiplier must be >= 2, got {max_multiplier}")
        if (
            not 1 <= min_operand <= max_operand
            or not 0 <= max_start <= max_value
            or max_value < 2 * max_operand
        ):
            raise ValueError(
                "chain_arithmetic: need 1 <= min_operand <= max_operand, 0 <= max_start <= max_value "
                "and max_value >= 2 * max_operand"
            )
        value = start = rng.randint(0, max_start)
        operations, lines = [], []
        for _ in range(rng.randint(min_steps, max_steps)):
            while True:
                op = rng.choice("+-*")
                operand = (
                    rng.randint(2, max_multiplier) if op == "*" else rng.randint(min_operand, max_operand)
                )
                result = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
                if 0 <= result <= max_value:  # terminates: + or - always fits as max_value >= 2 * max_operand
                    break
            operations.append((op, operand))
            lines.append(f"{value} {op} {operand} = {result}")
            value = result
        phrases = [f"{_WORDS[op]} {operand}" for op, operand in operations]
        prompt = f"Start {start}. {', '.join(phrases).capitalize()}.\n"
        lines.append(f"Answer: {value}")
        return {
            "prompt": prompt,
            "answer": str(value),
            "solution": "\n".join(lines),
            "num_steps": len(lines),
            "start": start,
            "operations": " ".join(f"{op}{operand}" for op, operand in operations),
        }
