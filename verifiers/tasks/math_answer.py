"""``math``: final-answer checking for GSM8K/MATH-style rows a user brings, by HuggingFace's math-verify.

math-verify extracts the answer (``\\boxed{}``, LaTeX, plain expressions) and compares it symbolically with the
gold answer in the row's ``answer`` column; GSM8K's ``#### 42`` gold format is reduced to ``42`` first. It parses
with sympy, which can take long on adversarial input, so this verifier is *untrusted* (``trusted = False``):
:class:`verifiers.ContainedVerifier` runs it in a worker process with a deadline. math-verify's own
``signal.alarm`` timeouts are switched off (they fail outside the main thread, e.g. under TRL's async rewards).

There is no generator (bring a dataset) and no step check (free-form reasoning steps are not checkable).
"""

from __future__ import annotations

from verifiers.base import ANSWER_PREFIX, Verifier, final_answer
from verifiers.registry import register

__all__ = ["MathAnswer"]


def _gold_text(answer: str) -> str:
    answer = str(answer)
    if "####" in answer:  # GSM8K: reasoning, then "#### 42"
        answer = answer.rsplit("####", 1)[1]
    return answer.strip().replace(",", "")


@register
class MathAnswer(Verifier):
    """GSM8K/MATH-style final answers checked by math-verify (bring your own rows).

    Rows carry ``answer`` (the gold final answer, LaTeX or plain; GSM8K ``#### x`` accepted).
    """

    name = "math"
    trusted = False

    def score(self, completion: str, example: dict) -> float:
        from math_verify import parse, verify

        gold_text = _gold_text(example["answer"])
        # An "Answer:" line, when present, is the answer; otherwise math-verify extracts from the whole text.
        answer_line = final_answer(completion)
        candidate = answer_line if answer_line else completion
        if not candidate.strip():
            return 0.0
        gold = parse(f"${gold_text}$", parsing_timeout=None) or parse(gold_text, parsing_timeout=None)
        predicted = parse(candidate, parsing_timeout=None)
        if not gold or not predicted:
            return 0.0
        return float(verify(gold, predicted, timeout_seconds=None))

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: object):
        raise NotImplementedError(
            "the 'math' verifier has no task generator: bring a GSM8K/MATH-style dataset with a 'prompt' and an "
            f"'answer' column (completions end with '{ANSWER_PREFIX} <answer>' or a \\boxed{{}} answer); in an "
            "llm-rl recipe: task.data.path and task.data.columns (docs/llm_rl.md, 'Your own data')"
        )

    @property
    def has_generator(self) -> bool:
        return False
