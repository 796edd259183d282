"""An example third-party verifier: reverse the given word. The whole plugin is this file plus one entry point
(``[project.entry-points."relabel_rl.verifiers"]`` in ``pyproject.toml``)."""

from __future__ import annotations

import random

from verifiers import Verifier, final_answer


class ReverseString(Verifier):
    """Reverse a word; reward 1 when the first ``Answer:`` line is the reversed word."""

    name = "reverse_string"

    def score(self, completion: str, example: dict) -> float:
        return float(final_answer(completion) == example["answer"])

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty):
        """Difficulty knob: ``length`` (letters per word, default 5)."""
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    @staticmethod
    def make_example(rng: random.Random, *, length: int = 5) -> dict:
        word = "".join(rng.choice("abcdefghij") for _ in range(length))
        return {
            "prompt": f"Reverse {word}.\n",
            "answer": word[::-1],
            "solution": f"Answer: {word[::-1]}",
            "num_steps": 1,
        }
