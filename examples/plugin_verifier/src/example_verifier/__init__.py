"""An example third-party verifier: reverse the given word. The whole plugin is this file plus one entry point."""

from __future__ import annotations

import random

from verifiers import Verifier


class ReverseString(Verifier):
    """Reward 1 when the line ``Answer: <word reversed>`` is in the completion."""

    name = "reverse_string"

    def score(self, completion: str, example: dict) -> float:
        answers = [
            line.strip()[len("Answer:") :].strip()
            for line in completion.splitlines()
            if line.strip().startswith("Answer:")
        ]
        return float(bool(answers) and answers[0] == example["answer"])

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty):
        return self.generate_from(self._example, n, seed=seed, split=split, difficulty=difficulty)

    def _example(self, rng: random.Random, *, length: int = 5) -> dict:
        word = "".join(rng.choice("abcdefghij") for _ in range(length))
        return {
            "prompt": f"Reverse {word}.\n",
            "answer": word[::-1],
            "solution": f"Answer: {word[::-1]}",
            "num_steps": 1,
        }
