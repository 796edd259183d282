"""``python_code``: write a Python function; scored by running unit tests in the sandbox (:mod:`verifiers.sandbox`).

Completion format: the code in a fenced block (```` ```python ```` ... ```` ``` ````); without a fence the whole
completion is taken as code. Steps are lines; the closing fence (or an ``Answer:`` line) is the terminal step.
A pass is the parent's verdict on the values the sandboxed code reported (the child never holds a pass token);
rows need top-level ``assert`` tests (see :mod:`verifiers.sandbox_checks`).

The generator is deliberately tiny (a handful of templated functions with random constants and tests computed
by a reference implementation here): enough for the conformance kit and smoke runs, not a benchmark. Bring
MBPP-style rows (``prompt``, ``tests``: top-level assert statements, ``entry_point``) for real work.

``trusted = True``: the untrusted part runs in the sandbox child, never here, and a score is bounded by the
sandbox's own wall-clock deadline; ``deadline`` tells :class:`verifiers.ContainedVerifier` that bound (plus
start-up and clean-up time), so its in-process deadline never cuts a sandbox run short.
"""

from __future__ import annotations

import random
import re
from dataclasses import fields

from verifiers.base import Verifier
from verifiers.registry import register
from verifiers.sandbox import SandboxLimits, run_python_tests

__all__ = ["PythonCode", "extract_code"]

_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
MAX_CODE_CHARS = 20_000


def extract_code(completion: str) -> str:
    """The first fenced code block, or the whole completion when there is none."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


@register
class PythonCode(Verifier):
    """Python functions scored by unit tests in a sandboxed subprocess.

    Rows carry ``tests`` (Python ``assert`` statements, one test per top-level statement) and ``entry_point``.

    Args:
      limits: the sandbox limits; keyword knobs (``wall_seconds=2``, ...) may be given instead.
    """

    name = "python_code"
    trusted = True

    def __init__(self, *, limits: SandboxLimits | None = None, **limit_knobs: object) -> None:
        known = {f.name for f in fields(SandboxLimits)}
        unknown = sorted(set(limit_knobs) - known)
        if unknown:
            raise ValueError(f"python_code: unknown sandbox limit(s) {unknown}; known: {sorted(known)}")
        self.limits = SandboxLimits(**{**(vars(limits) if limits else {}), **limit_knobs})

    @property
    def deadline(self) -> float:
        """Seconds one score may take: the sandbox's wall-clock limit plus start-up and clean-up time."""
        return self.limits.wall_seconds + 15.0

    def score(self, completion: str, example: dict) -> float:
        code = extract_code(completion)
        if not code.strip() or len(code) > MAX_CODE_CHARS:
            return 0.0
        return float(run_python_tests(code, str(example["tests"]), limits=self.limits).passed)

    def is_terminal_step(self, step: str) -> bool:
        return step.strip() == "```" or super().is_terminal_step(step)

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        """Difficulty knobs: ``num_tests`` (asserts per task), ``max_constant``."""
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    @staticmethod
    def make_example(rng: random.Random, *, num_tests: int = 3, max_constant: int = 20) -> dict:
        if num_tests < 1 or max_constant < 2:
            raise ValueError("python_code: need num_tests >= 1 and max_constant >= 2")
        k = rng.randint(2, max_constant)
        letter = rng.choice("abcdefghij")
        # (function name, prompt, body lines, reference implementation, input drawer)
        templates = [
            (
                "add_k",
                f"returns x plus {k}",
                [f"return x + {k}"],
                lambda x: x + k,
                lambda: rng.randint(-50, 50),
            ),
            (
                "scale",
                f"returns x times {k}",
                [f"return x * {k}"],
                lambda x: x * k,
                lambda: rng.randint(-50, 50),
            ),
            (
                "count_letter",
                f"returns how many times the letter {letter} occurs in the string x",
                [f"return x.count({letter!r})"],
                lambda x: x.count(letter),
                lambda: "".join(rng.choice("abcdefghij") for _ in range(rng.randint(0, 12))),
            ),
            (
                "sum_multiples",
                f"returns the sum of the integers from 0 to x-1 divisible by {k}",
                [f"return sum(i for i in range(x) if i % {k} == 0)"],
                lambda x: sum(i for i in range(x) if i % k == 0),
                lambda: rng.randint(0, 60),
            ),
            (
                "clamp",
                f"returns x limited to the range 0 to {k * 10}",
                [f"return min(max(x, 0), {k * 10})"],
                lambda x: min(max(x, 0), k * 10),
                lambda: rng.randint(-100, 200),
            ),
        ]
        function, description, body, reference, draw = templates[rng.randrange(len(templates))]
        inputs = [draw() for _ in range(num_tests)]
        tests = "\n".join(f"assert {function}({x!r}) == {reference(x)!r}" for x in inputs)
        code_lines = [f"def {function}(x):", *(f"    {line}" for line in body)]
        solution = "\n".join(["```python", *code_lines, "```"])
        return {
            "prompt": f"Write a Python function {function}(x) that {description}.\n",
            "answer": "\n".join(code_lines),
            "solution": solution,
            "num_steps": len(solution.splitlines()),
            "tests": tests,
            "entry_point": function,
        }
