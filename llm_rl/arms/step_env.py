"""A `tree_search.SearchEnv` whose moves are reasoning steps: the bridge between the search library and an LLM.

A state is ``(example index, steps so far)``; its text prefix is ``prompt + "".join(s + delimiter for s in
steps)``. An action is one candidate next step, a :class:`StepAction`
(its text and how its generation ended: at the step delimiter, at EOS, or at the step-token limit).

* ``expand(states)`` answers the search's whole round in two batched model calls: ONE
  ``backend.sample(prefixes, n=K, stop=delimiter)`` for every leaf of every root (the backend prefills each
  prefix once and repeats its KV cache K times), and ONE value-head pass over the same prefixes. The K raw
  samples are merged into distinct actions with :func:`tree_search.sampled_prior` (Sampled MuZero: the prior is
  their empirical frequency, since they were drawn from the policy itself). With ``prune_rejected_steps`` (the
  relabeller sets it exactly under ``task.feedback: steps``; under ``outcome`` no step is checked) every
  distinct candidate that ``verifier.check_step`` rejects gets prior 0: PUCT and Gumbel never select it, so it
  is never visited and its share of the search target is exactly 0 (if *every* candidate is rejected the prior
  is left unpruned: a node needs at least one move).
* ``step(state, action)`` appends the step. The child is terminal when the step is the answer line
  (``verifier.is_terminal_step``), when its generation hit EOS, when it is empty, or when it is step number
  ``task.max_steps``; a terminal child's reward is the contained verifier's score of the whole completion (the
  steps joined by the delimiter). Non-terminal steps earn 0: the problem is single-agent with one terminal
  reward in [0, 1], so the search runs with ``value_bounds=(0, 1)``.

Each distinct candidate keeps the token ids it was sampled as (`Expansion.info["token_ids"]`: the step's tokens
plus the delimiter or EOS token that ended it): the policy is trained on exactly the tokens it generated, never on
a re-tokenisation of the text. A step cut by the token limit (no delimiter, no EOS) is not terminal: the next
prefix appends the delimiter after it, as the text format prescribes, but its training tokens are only those
actually generated.

Nothing here counts spending: the backend (a metered sampler) charges the tokens it generates and prefills, and
the value-head pass (`GenerationBackend.prefix_values`, a second forward pass over the same prefixes, charged as
prefill); the metered verifier charges each terminal score and each step check. :class:`ExpandStats` keeps what
the arm reports (tokens/s of expansion, pruned candidates, ...).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from tree_search import Expansion, Transition, sampled_prior

__all__ = ["ExpandStats", "StepAction", "StepSearchEnv", "StepState"]

StepEnding = Literal["delimiter", "eos", "length"]


@dataclass(frozen=True)
class StepState:
    """A search state: which prompt, and the reasoning steps taken so far (step texts, no delimiters)."""

    example_index: int
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepAction:
    """One candidate next step: its text (without the delimiter) and how its generation ended."""

    text: str
    ending: StepEnding = "delimiter"


@dataclass
class ExpandStats:
    """Running totals of the env's work (for metrics and the tokens/s report)."""

    expand_calls: int = 0
    states_expanded: int = 0
    raw_candidates: int = 0
    distinct_candidates: int = 0
    rejected_candidates: int = 0
    all_rejected_nodes: int = 0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    value_seconds: float = 0.0
    terminal_scores: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of generation wall time inside ``expand``."""
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "expand_calls": self.expand_calls,
            "states_expanded": self.states_expanded,
            "mean_distinct_candidates": self.distinct_candidates / max(self.states_expanded, 1),
            "rejected_fraction": self.rejected_candidates / max(self.distinct_candidates, 1),
            "all_rejected_nodes": self.all_rejected_nodes,
            "expand_generated_tokens": self.generated_tokens,
            "expand_tokens_per_s": self.tokens_per_second,
        }


class StepSearchEnv:
    """The reasoning-step search domain over a batch of prompts (see the module docstring).

    Args:
      examples: the task rows (dicts with at least ``prompt``), indexed by ``StepState.example_index``.
      verifier: the (metered, contained) verifier: scores never raise; failures score 0 and are counted.
      backend: the (metered) `llm_rl.generation.GenerationBackend`: it samples the candidates and its
        ``prefix_values`` (the policy's value head) values new leaves.
      num_candidates: K, raw steps sampled per expanded state.
      max_step_tokens: new tokens per step, at most.
      max_steps: steps per completion, at most (the step that reaches it is terminal).
      temperature: sampling temperature of the candidates.
      prune_rejected_steps: give candidates that ``check_step`` rejects prior 0 (needs a verifier that gives step
        checks: ``task.feedback: steps``).
      generator: the torch generator the candidates are sampled with (reproducibility).
    """

    def __init__(
        self,
        examples: Sequence[dict],
        *,
        verifier: Any,
        backend: Any,
        num_candidates: int,
        max_step_tokens: int,
        max_steps: int,
        temperature: float = 1.0,
        prune_rejected_steps: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_candidates < 1 or max_step_tokens < 1 or max_steps < 1:
            raise ValueError("StepSearchEnv: num_candidates, max_step_tokens and max_steps must be >= 1")
        self.examples = list(examples)
        self.verifier = verifier
        self.backend = backend
        self.num_candidates = num_candidates
        self.max_step_tokens = max_step_tokens
        self.max_steps = max_steps
        self.temperature = temperature
        self.prune_rejected_steps = prune_rejected_steps
        self.generator = generator
        self.delimiter: str = verifier.step_delimiter
        self.stats = ExpandStats()

    # --- text ---------------------------------------------------------------------------------------------------
    def prefix(self, state: StepState) -> str:
        """The model input before the next step: the prompt, then every step followed by the delimiter."""
        return self.examples[state.example_index]["prompt"] + "".join(s + self.delimiter for s in state.steps)

    def completion(self, steps: Sequence[str]) -> str:
        """The completion the verifier scores: the steps joined by the delimiter."""
        return self.delimiter.join(steps)

    def root_state(self, example_index: int) -> StepState:
        return StepState(example_index, ())

    # --- SearchEnv ----------------------------------------------------------------------------------------------
    def expand(self, states: Sequence[StepState]) -> list[Expansion]:
        """K sampled candidate steps per state (one batched generation), their prior, and the states' values."""
        prefixes = [self.prefix(s) for s in states]
        start = time.perf_counter()
        samples = self.backend.sample(
            prefixes,
            n=self.num_candidates,
            max_new_tokens=self.max_step_tokens,
            temperature=self.temperature,
            stop=self.delimiter,
            generator=self.generator,
        )
        self.stats.generation_seconds += time.perf_counter() - start
        start = time.perf_counter()
        values = self.prefix_values(prefixes)
        self.stats.value_seconds += time.perf_counter() - start
        self.stats.expand_calls += 1

        expansions = []
        for state, continuations, value in zip(states, samples, values):
            raw_actions = [self._action(c) for c in continuations]
            self.stats.generated_tokens += sum(len(c.token_ids) for c in continuations)
            actions, prior = sampled_prior(raw_actions)
            first_of: dict[StepAction, Any] = {}
            for a, c in zip(raw_actions, continuations):
                first_of.setdefault(a, c)
            rejected = np.zeros(len(actions), dtype=bool)
            if self.prune_rejected_steps:
                rejected = np.array([self._rejected(state, a) for a in actions], dtype=bool)
                if rejected.all():
                    self.stats.all_rejected_nodes += 1
                elif rejected.any():
                    prior = np.where(rejected, 0.0, prior)
                    prior = prior / prior.sum()
            self.stats.states_expanded += 1
            self.stats.raw_candidates += len(raw_actions)
            self.stats.distinct_candidates += len(actions)
            self.stats.rejected_candidates += int(rejected.sum())
            info = {
                "token_ids": tuple(tuple(int(t) for t in first_of[a].token_ids) for a in actions),
                "logprobs": np.array([float(first_of[a].logprob) for a in actions]),
                "rejected": rejected,
            }
            expansions.append(Expansion(actions=actions, prior=prior, value=float(value), info=info))
        return expansions

    def step(self, state: StepState, action: StepAction) -> Transition:
        """Append ``action``; score the completion if that ends it (see the module docstring)."""
        steps = (*state.steps, action.text)
        child = StepState(state.example_index, steps)
        terminal = (
            action.ending == "eos"
            or not action.text.strip()
            or self.verifier.is_terminal_step(action.text)
            or len(steps) >= self.max_steps
        )
        if not terminal:
            return Transition(child, 0.0, False)
        reward = float(self.verifier.score(self.completion(steps), self.examples[state.example_index]))
        self.stats.terminal_scores.append(reward)
        return Transition(child, reward, True)

    # --- helpers ------------------------------------------------------------------------------------------------
    def prefix_values(self, prefixes: Sequence[str]) -> np.ndarray:
        """The value head at the end of each prefix, in [0, 1] (one batched pass of the backend's policy)."""
        return self.backend.prefix_values(prefixes)

    def _action(self, continuation: Any) -> StepAction:
        text = continuation.text
        if self.delimiter and text.endswith(self.delimiter):
            text = text[: -len(self.delimiter)]
        if continuation.finished:
            ending: StepEnding = "eos"
        elif continuation.stopped:
            ending = "delimiter"
        else:
            ending = "length"
        return StepAction(text, ending)

    def _rejected(self, state: StepState, action: StepAction) -> bool:
        verdict = self.verifier.check_step(list(state.steps), action.text, self.examples[state.example_index])
        return verdict is False
