"""``countdown`` (TinyZero-style): reach a target from given numbers with + - * /, each number used at most once.

Prompt ``Numbers 3 7 12. Target 33.\\n``; gold solution::

    3 * 7 = 21
    21 + 12 = 33
    Answer: (3 * 7) + 12

The final answer is an expression, evaluated by the safe parser in :mod:`verifiers.tasks.expression` (never
``eval``). Intermediate lines ``a op b = c`` are checkable: the arithmetic must be exact and ``a``, ``b`` must be
available, i.e. unused given numbers or results of earlier lines (the pool after the model's own earlier steps).
Generated targets are built by combining *all* numbers, so every instance is solvable; the verifier accepts
any expression that uses each number at most once.
"""

from __future__ import annotations

import random
from collections import Counter

from verifiers.base import Verifier, final_answer
from verifiers.registry import register
from verifiers.tasks.equation import apply, parse_equation
from verifiers.tasks.expression import ExpressionError, evaluate

__all__ = ["Countdown"]


@register
class Countdown(Verifier):
    """Reach a target from given numbers with + - * / (TinyZero-style); each equation checkable.

    Rows carry ``numbers`` (list[int]) and ``target`` (int).
    """

    name = "countdown"
    trusted = True

    def score(self, completion: str, example: dict) -> float:
        answer = final_answer(completion)
        if not answer:
            return 0.0
        try:
            value, used = evaluate(answer)
        except ExpressionError:
            return 0.0
        if Counter(used) - Counter(int(x) for x in example["numbers"]):
            return 0.0  # a number used more often than given, or one not given at all
        return float(value == int(example["target"]))

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        if self.is_terminal_step(step):
            return self.score(step, example) == 1.0
        pool = Counter(int(x) for x in example["numbers"])
        for previous in previous_steps:
            if self.is_terminal_step(previous):
                return False
            parsed = parse_equation(previous)
            if parsed is not None and parsed.holds and not Counter([parsed.left, parsed.right]) - pool:
                pool -= Counter([parsed.left, parsed.right])
                pool[parsed.result] += 1
        equation = parse_equation(step)
        return equation is not None and equation.holds and not Counter([equation.left, equation.right]) - pool

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        """Difficulty knobs: ``min_numbers``, ``max_numbers``, ``max_number``, ``max_target``."""
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    @staticmethod
    def make_example(
        rng: random.Random,
        *,
        min_numbers: int = 3,
        max_numbers: int = 4,
        max_number: int = 25,
        max_target: int = 200,
    ) -> dict:
        if not 2 <= min_numbers <= max_numbers or max_number < 2 or max_target < 1:
            raise ValueError(
                "countdown: need 2 <= min_numbers <= max_numbers, max_number >= 2, max_target >= 1"
            )
        while True:
            numbers = [rng.randint(1, max_number) for _ in range(rng.randint(min_numbers, max_numbers))]
            built = _combine_all(rng, numbers, max_target)
            if built is not None:
                target, expression, lines = built
                break
        lines.append(f"Answer: {expression}")
        return {
            "prompt": f"Numbers {' '.join(map(str, numbers))}. Target {target}.\n",
            "answer": expression,
            "solution": "\n".join(lines),
            "num_steps": len(lines),
            "numbers": numbers,
            "target": target,
        }


def _combine_all(
    rng: random.Random, numbers: list[int], max_target: int
) -> tuple[int, str, list[str]] | None:
    """Combine the numbers pairwise at random into one value; None if an intermediate leaves [1, max_target]."""
    pool = [(value, str(value), True) for value in numbers]  # (value, expression, is_atom)
    lines = []
    while len(pool) > 1:
        (a, a_text, a_atom), (b, b_text, b_atom) = (pool.pop(rng.randrange(len(pool))) for _ in range(2))
        op = rng.choice("+-*/")
        if op in "-/" and a < b:
            (a, a_text, a_atom), (b, b_text, b_atom) = (b, b_text, b_atom), (a, a_text, a_atom)
        result = apply(a, op, b)
        if (
            result is None
            or result.denominator != 1
            or not 1 <= result <= max_target
            or (op == "/" and b == 1)
        ):
            return None
        left = a_text if a_atom else f"({a_text})"
        right = b_text if b_atom else f"({b_text})"
        lines.append(f"{a} {op} {b} = {int(result)}")
        pool.append((int(result), f"{left} {op} {right}", False))
    return pool[0][0], pool[0][1], lines
