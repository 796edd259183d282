"""The verifier contract: what every task (built-in or plugin) provides to the LLM arms.

A verifier answers three questions, from cheapest to most useful to the search:

* ``score(completion, example)``: is the final answer right? A float in [0, 1]; the outcome reward of GRPO and the
  terminal reward of the tree search.
* ``check_step(previous_steps, step, example)``: is this one reasoning step right, given the steps before it?
  ``True``/``False`` when the task can tell, ``None`` when it cannot (the default). Step checks let the
  relabeller prune or reward a wrong step immediately instead of waiting for the outcome.
* ``make_example(rng, **knobs)``: one task row drawn with ``rng`` (a seeded ``random.Random``): the columns
  ``prompt``, ``answer``, ``solution`` (a gold step-by-step completion, one step per line, ending in the final
  answer line; used for the SFT warm start) and ``num_steps``, plus whatever the verifier needs to score. Its
  keyword-only parameters *are* the task's difficulty knobs (:meth:`Verifier.difficulty_knobs`).
* ``generate(n, seed=..., split=...)``: ``n`` rows as a ``datasets.Dataset``. Defining ``make_example`` is
  enough: the default ``generate`` draws the rows from it with :meth:`Verifier.generate_from`. Override
  ``generate`` only for data that is not drawn one row at a time (a hub dataset, a file).

Steps are ``step_delimiter``-separated (a newline by default); the final-answer step is recognised by
:meth:`Verifier.is_terminal_step` (a line starting with ``Answer:``), so the step search knows a leaf is terminal.

Generators share :meth:`Verifier.generate_from`, which makes the seeding and split rules uniform (a plugin that
overrides ``generate`` should call it too, with its own row function):

* example ``i`` is drawn from its own RNG seeded with ``(name, split, seed + i)``, so ``generate(5, seed=s)`` is a
  prefix of ``generate(10, seed=s)`` and runs are reproducible;
* train and test are disjoint *by construction*, not by luck: every prompt is assigned to a split by a hash of
  its text (``test_fraction`` of the prompt space goes to test) and a generator redraws until the prompt falls in
  the requested split. Any train set is therefore disjoint from any test set, whatever the seeds and sizes;
* prompts are unique within one dataset (redraw on a duplicate).

Conventions the arms rely on (checked by ``verifiers.testing.check_verifier``): a prompt ends with the step
delimiter (the model's first step starts on a line of its own, since a completion is appended to the prompt
as-is); ``num_steps`` counts the lines of ``solution``, the answer line included; a task whose length can be set
exposes the knobs ``min_steps`` / ``max_steps``, counting the steps *before* the answer line (so a row drawn with
``min_steps = max_steps = L`` has ``num_steps == L + 1``) — the variance probe and the length sweeps set them.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # datasets is imported lazily: `llm-rl tasks` and the sandbox workers never need it.
    import datasets

__all__ = ["ANSWER_PREFIX", "LENGTH_KNOBS", "SPLITS", "Verifier", "final_answer", "split_of"]

ANSWER_PREFIX = "Answer:"
SPLITS = ("train", "test")
# Share of the prompt space reserved for the test split (by prompt hash).
TEST_FRACTION = 0.2
# Redraws allowed per example before a generator gives up (the task space is too small for n).
MAX_DRAWS_PER_EXAMPLE = 2000
REQUIRED_COLUMNS = {"prompt": str, "answer": str, "solution": str, "num_steps": int}
# The knobs that set a task's length in steps (answer line excluded); the variance probe and length sweeps use them.
LENGTH_KNOBS = ("min_steps", "max_steps")


def split_of(prompt: str, *, test_fraction: float = TEST_FRACTION) -> str:
    """The split a prompt belongs to, from a stable hash of its text (independent of seeds and sizes)."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


def final_answer(completion: str, *, prefix: str = ANSWER_PREFIX) -> str | None:
    """The text after the first line starting with ``prefix`` (stripped), or None if there is no such line.

    The *first* answer line counts: text a model generates after answering is ignored, and a second, different
    answer cannot rescue a wrong first one.
    """
    for line in completion.splitlines():
        stripped = line.strip()
        if stripped.startswith(prefix):
            return stripped[len(prefix) :].strip()
    return None


class Verifier(abc.ABC):
    """Abstract base of every verifier. Subclass, set ``name``, implement ``score``; the rest is optional.

    Attributes:
      name: the registry name (``verifiers.load(name)``), also the reward function's ``__name__`` in TRL logs.
      step_delimiter: the text between two reasoning steps in a completion.
      trusted: a promise by the verifier's author that ``score``/``check_step`` are bounded, side-effect-free
        Python (or manage their own sandbox), so :class:`verifiers.ContainedVerifier` may call them in-process,
        skipping the worker process (the fast path) but not the deadline. It is not a permission: it says
        nothing about correctness, and a trusted verifier's exceptions and bad scores are still caught and
        counted. Defaults to False, and an untrusted verifier (every plugin unless it says otherwise) is scored
        in a worker process. Every contained call has a deadline.
      deadline: seconds one contained call may take, None for the container's default
        (:data:`verifiers.DEFAULT_TIMEOUT`); a verifier bounded by its own subprocess deadline declares it here.
    """

    name: str = ""
    step_delimiter: str = "\n"
    trusted: bool = False
    deadline: float | None = None

    # --- the contract -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def score(self, completion: str, example: dict) -> float:
        """The final-answer reward of ``completion`` for the task row ``example``, in [0, 1]."""

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        """Whether ``step`` is correct after ``previous_steps``; None when this verifier cannot tell.

        ``previous_steps`` are the steps the *model* already wrote in this completion (not the gold ones, and not
        necessarily correct: judge ``step`` against them, as chain arithmetic applies the next operation to the
        model's own running value), in order, without their delimiters; ``[]`` for the first step. ``step`` is
        one candidate step, without its delimiter; it may be the answer step (see :meth:`is_terminal_step`).
        """
        return None

    def split_steps(self, completion: str) -> list[str]:
        """The reasoning steps of a completion: ``step_delimiter``-separated, empty ones dropped."""
        return [step for step in completion.split(self.step_delimiter) if step.strip()]

    def is_terminal_step(self, step: str) -> bool:
        """Whether ``step`` is the final-answer step (ends the solution)."""
        return step.strip().startswith(ANSWER_PREFIX)

    def make_example(self, rng: random.Random, **difficulty: Any) -> dict:
        """One task row drawn with ``rng``; its keyword-only parameters (with defaults) are the difficulty knobs.

        Optional: define it (a ``@staticmethod`` is fine) and the default :meth:`generate` does the rest. Example::

            @staticmethod
            def make_example(rng, *, min_steps: int = 2, max_steps: int = 4) -> dict:
                ...
                return {"prompt": "...\\n", "answer": "7", "solution": "3 + 4 = 7\\nAnswer: 7", "num_steps": 2}

        Raise ``ValueError`` for knob values that make no sense together (``min_steps > max_steps``).
        """
        raise NotImplementedError(f"verifier {self.name!r} draws no rows one at a time (no make_example)")

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: Any) -> datasets.Dataset:
        """``n`` task rows as a ``datasets.Dataset`` (see the module docstring for columns and seeding).

        The default draws them with :meth:`make_example` through :meth:`generate_from`; ``difficulty`` holds the
        knobs (unknown ones are an error listing the valid ones).
        """
        if type(self).make_example is Verifier.make_example:
            raise NotImplementedError(
                f"verifier {self.name!r} has no task generator; bring your own dataset "
                f"(columns: prompt, answer, and what {type(self).__name__}.score reads)"
            )
        return self.generate_from(self.make_example, n, seed=seed, split=split, difficulty=difficulty)

    def difficulty_knobs(self) -> dict[str, Any]:
        """The difficulty knobs and their defaults: the keyword-only parameters of :meth:`make_example`.

        Empty when there is no ``make_example``; a verifier that overrides ``generate`` with knobs of its own
        should override this too, so `llm-rl tasks NAME` can list them.
        """
        if type(self).make_example is Verifier.make_example:
            return {}
        return _knobs_of(self.make_example)

    # --- capabilities (for `llm-rl tasks` and the conformance kit) ----------------------------------------

    @property
    def has_step_checks(self) -> bool:
        return type(self).check_step is not Verifier.check_step

    @property
    def has_generator(self) -> bool:
        cls = type(self)
        return cls.generate is not Verifier.generate or cls.make_example is not Verifier.make_example

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- shared generator plumbing ------------------------------------------------------------------------

    def generate_from(
        self,
        make_example: Callable[..., dict],
        n: int,
        *,
        seed: int,
        split: str,
        difficulty: dict[str, Any],
        test_fraction: float = TEST_FRACTION,
    ) -> datasets.Dataset:
        """Build a dataset from ``make_example(rng, **difficulty) -> row``, applying the seeding/split rules.

        The default :meth:`generate` calls it with :meth:`make_example`; a ``generate`` override calls it with
        its own row function. ``make_example``'s keyword-only parameters *are* the difficulty knobs: unknown
        knobs are rejected with the list of valid ones, and values are coerced to the type of the parameter's
        default. Example ``i`` is drawn with ``random.Random(f"{name}:{split}:{seed + i}")``, redrawn until its
        prompt is new and belongs to ``split`` (:func:`split_of`); every row is checked for the required columns.
        """
        import datasets

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        knobs = _validate_difficulty(self.name, make_example, difficulty)
        rows: list[dict] = []
        seen: set[str] = set()
        for index in range(n):
            rng = random.Random(f"{self.name}:{split}:{seed + index}")
            for _ in range(MAX_DRAWS_PER_EXAMPLE):
                row = make_example(rng, **knobs)
                prompt = row["prompt"]
                if prompt not in seen and split_of(prompt, test_fraction=test_fraction) == split:
                    break
            else:
                raise ValueError(
                    f"{self.name}: could not draw {n} distinct {split} prompts with {knobs} "
                    f"(stuck at example {index}); the task space is too small, raise the difficulty"
                )
            _check_row(self.name, row)
            seen.add(prompt)
            rows.append(row)
        if not rows:
            return datasets.Dataset.from_dict({column: [] for column in REQUIRED_COLUMNS})
        return datasets.Dataset.from_list(rows)


def _knobs_of(make_example: Callable[..., dict]) -> dict[str, Any]:
    return {
        p.name: p.default
        for p in inspect.signature(make_example).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _validate_difficulty(name: str, make_example: Callable[..., dict], difficulty: dict[str, Any]) -> dict:
    params = _knobs_of(make_example)
    unknown = sorted(set(difficulty) - set(params))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "none"
        raise ValueError(f"{name}: unknown difficulty knob(s) {unknown}; valid knobs (defaults): {valid}")
    return {key: _coerce(name, key, value, params[key]) for key, value in difficulty.items()}


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the knob's default; lossy conversions (3.5 -> int, "no" -> bool) are errors."""
    if default is inspect.Parameter.empty or default is None or type(value) is type(default):
        return value
    kind = type(default)
    error = ValueError(f"{name}: difficulty {key}={value!r} is not a {kind.__name__}")
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise error
    if isinstance(value, bool):
        raise error
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise error from None
    if kind is int and isinstance(value, float) and converted != value:
        raise error
    return converted


def _check_row(name: str, row: dict) -> None:
    for column, kind in REQUIRED_COLUMNS.items():
        if not isinstance(row.get(column), kind):
            raise TypeError(f"{name}: generated row lacks a {kind.__name__} {column!r} column: {row!r}")
