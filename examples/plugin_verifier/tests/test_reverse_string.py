"""A plugin's own test: the conformance kit checks the whole contract in one call."""

import verifiers
from verifiers.testing import check_verifier


def test_reverse_string_conforms():
    check_verifier("reverse_string")  # found through the entry point, like any user would load it


def test_reverse_string_scores():
    verifier = verifiers.load("reverse_string")
    assert verifier.score("thinking...\nAnswer: cba", {"answer": "cba"}) == 1.0
    assert verifier.score("Answer: abc", {"answer": "cba"}) == 0.0
