"""Parsing one scratchpad line ``a op b = c`` (integers, op in + - * /) without evaluating any model text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Equation", "apply", "parse_equation", "parse_int"]

_EQUATION = re.compile(r"^\s*(-?\d{1,12})\s*([-+*/x])\s*(-?\d{1,12})\s*=\s*(-?\d{1,24})\s*\.?\s*$")
_INT = re.compile(r"^\s*(-?\d{1,24})\s*\.?\s*$")


@dataclass(frozen=True)
class Equation:
    """A parsed ``left op right = result`` line (``x`` is read as ``*``)."""

    left: int
    op: str
    right: int
    result: int

    @property
    def holds(self) -> bool:
        """Whether the arithmetic is right (division must be exact)."""
        value = apply(self.left, self.op, self.right)
        return value is not None and value == self.result


def parse_equation(text: str) -> Equation | None:
    match = _EQUATION.match(text)
    if match is None:
        return None
    left, op, right, result = match.groups()
    return Equation(int(left), "*" if op == "x" else op, int(right), int(result))


def parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    match = _INT.match(text)
    return int(match.group(1)) if match else None


def apply(left: int | Fraction, op: str, right: int | Fraction) -> Fraction | None:
    """``left op right`` exactly; None for division by zero or an unknown operator."""
    if op == "+":
        return Fraction(left) + right
    if op == "-":
        return Fraction(left) - right
    if op == "*":
        return Fraction(left) * right
    if op == "/":
        return None if right == 0 else Fraction(left) / right
    return None
