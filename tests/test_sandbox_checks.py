"""The trusted side of the code sandbox: how tests are split into probes, and how reported values are judged.

No sandbox runs here: reports are written by hand, as a hostile child could write them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from verifiers.sandbox_checks import judge, plan_tests


def _reports(*values, done: bool = True) -> str:
    """The child's report lines for probe values given in step order (``("e", msg)`` for an error)."""
    lines = ['{"load":null}']
    for index, value in enumerate(values):
        if isinstance(value, tuple) and value[0] == "e":
            lines.append(json.dumps({"i": index, "e": value[1]}))
        elif value == "ok":
            lines.append(json.dumps({"i": index, "ok": True}))
        else:
            lines.append(json.dumps({"i": index, "v": value}))
    return "\n".join([*lines, '{"done":true}'] if done else lines)


def test_expected_values_stay_in_the_parent():
    tests = (
        "import math\n"
        "expected = [7, 8]\n"
        "assert add_k(3) == 987654321\n"
        "assert sorted(pairs(2)) == expected\n"
        "assert math.isclose(area(2), 12.566, rel_tol=1e-3)\n"
        "assert abs(root(2) - 1.41421) < 1e-4\n"
        "assert set(items(5)) == {1, 5}\n"
        "assert not is_prime(987654321)\n"
    )
    plan = plan_tests(tests)
    shipped = " ".join(source for _, source in plan.steps)
    assert [s for s in plan.steps if s[0] == "eval"] == [
        ("eval", "add_k(3)"),
        ("eval", "sorted(pairs(2))"),
        ("eval", "area(2)"),
        ("eval", "root(2)"),
        ("eval", "set(items(5))"),
        ("eval", "is_prime(987654321)"),  # an argument is an input: the child needs it
    ]
    for expected in ("7, 8", "12.566", "1.41421", "1e-4", "{1, 5}"):
        assert expected not in shipped
    verdict = judge(plan, _reports("ok", 987654321, [7, 8], 12.5664, 1.414213, {"s": [1, 5]}, False))
    assert (verdict.tests_passed, verdict.tests_total, verdict.error) == (8, 8, "")


def test_names_are_inlined_or_shipped_and_rebinding_makes_them_the_candidates():
    plan = plan_tests("x = 3\nassert f(x) == 4\ny = f(1)\nassert y + 1 == 3\nx = g(0)\nassert f(x) == 5")
    assert plan.steps == (
        ("eval", "f(3)"),
        ("exec", "y = f(1)"),
        ("eval", "y"),
        ("exec", "x = g(0)"),
        ("eval", "f(x)"),
    )
    verdict = judge(plan, _reports(4, "ok", 2, "ok", 0))
    assert (verdict.tests_passed, verdict.tests_total) == (5, 6)
    assert "assert f(x) == 5" in verdict.error and "returned 0" in verdict.error


def test_a_solution_name_that_shadows_a_builtin_is_the_candidates():
    plan = plan_tests("assert max(3) == 3\nassert len(f(2)) == 2", code="def max(x):\n    return x")
    assert [s for _, s in plan.steps] == ["max(3)", "len(f(2))"]


def test_forged_and_broken_reports_never_pass():
    plan = plan_tests("assert f(1) == 2\nassert f(2) != 3\nassert g(1)")
    cases = {
        "an opaque object": _reports({"?": "Equal"}, {"?": "Equal"}, {"?": "Equal"}),
        "errors": _reports(("e", "TypeError: no"), ("e", "TypeError: no"), ("e", "TypeError: no")),
        "malformed values": _reports({"t": 5}, {"x": [1], "y": 2}, {"s": [[1]]}),
        "nothing reported": "",
        "no load line": '{"i":0,"v":2}\n{"i":1,"v":4}\n{"i":2,"v":true}',
        "a load error": '{"load":"SyntaxError: bad"}',
    }
    for label, reports in cases.items():
        verdict = judge(plan, reports, stopped="timed out")
        assert verdict.tests_passed == 0, label
    assert judge(plan, _reports(2, 4, True)).tests_passed == 3  # the control
    first_wins = _reports(1, 4, True) + "\n" + '{"i":0,"v":2}'
    assert judge(plan, first_wins).tests_passed == 2


def test_short_circuit_and_missing_values():
    plan = plan_tests("assert f(1) is None or f(1) > 3\nassert h(0) == 1")
    assert judge(plan, _reports(None, ("e", "ValueError: unused"), 1)).tests_passed == 2
    stopped = judge(plan, _reports(5, 5, done=False), stopped="timed out after 1s")
    assert stopped.tests_passed == 1 and "timed out after 1s" in stopped.error and not stopped.complete


def test_costly_operations_on_reported_values_are_refused_quickly():
    plan = plan_tests(
        "assert 2 ** f(1) == 4\nassert 'a' * f(2) == 'aa'\nassert 1 << f(3) == 2\nassert f(4) % 2 == 0"
    )
    start = time.monotonic()
    verdict = judge(plan, _reports(10**9, 10**9, 10**9, "%s%s"))
    assert verdict.tests_passed == 0 and time.monotonic() - start < 1.0
    assert judge(plan, _reports(2, 2, 1, 4)).tests_passed == 4


def test_the_parent_never_runs_test_code_beyond_the_safe_subset(tmp_path):
    marker = tmp_path / "ran"
    tests = f"assert f(1) == open({str(marker)!r}, 'w').write('x')\nimport os\nassert f(2) == os.getpid()"
    plan = plan_tests(tests)
    judge(plan, _reports(1, "ok", 2))
    assert not Path(marker).exists()
    assert any("open(" in source for _, source in plan.steps)  # the child evaluates it, in the sandbox


def test_bad_test_suites_are_rejected():
    with pytest.raises(ValueError, match="no top-level assert"):
        plan_tests("def check(candidate):\n    assert candidate(1) == 2\ncheck(f)")
    with pytest.raises(ValueError, match="do not parse"):
        plan_tests("assert f(1) ==")
