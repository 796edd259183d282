"""Unit tests judged outside the untrusted interpreter: the sandbox computes values, the parent compares them.

Why: when the candidate's code and the code that decides "pass" share one interpreter, the candidate can forge
the decision (walk frames to the pass token, return an object whose ``==`` is always true, clear the list of
tests). Here the child only ever evaluates *probes* — the parts of a test that need the candidate's code — and
reports their values as JSON by builtin type; the expected values never enter the child, and the comparison
runs in the parent over plain builtin data.

How a test is split (:func:`plan_tests`), statement by statement:

* ``assert <expr>``: the parent keeps the maximal sub-expressions it can evaluate safely by itself (constants,
  containers, comparisons, arithmetic, ``and``/``or``/``not``, calls of a few pure builtins such as ``abs``,
  ``len``, ``sorted``, ``set``, ``round`` and of ``math.isclose``-like functions) and turns every part that
  needs the candidate into a probe: in ``assert add_k(3) == 8`` the child evaluates ``add_k(3)``, the parent
  compares the reported value with ``8``. A one-argument pure builtin around a probe is evaluated in the child
  (``sorted(f(x))``: an iterator or a ``map`` is reported by its content);
* ``import math`` / ``from math import isclose`` and assignments of values the parent can compute
  (``expected = [1, 2]``) are run by the parent (imports also in the child); a literal value is inlined where a
  probe uses the name, so the child does not see it;
* any other statement (a ``def``, ``x = f(3)``, an expression statement) runs in the child as setup and must
  not raise; the names it binds are the candidate's from then on.

Only top-level ``assert`` statements are checks: a test suite without one is rejected (``ValueError``), since a
statement the child runs cannot be verified by anyone but the child. Each top-level statement still counts as
one test in ``tests_passed``/``tests_total``.

The parent never runs test code beyond that safe subset (a poisoned dataset row is not code the parent
executes), and it guards the operations whose cost a reported value could blow up (``**``, ``<<``, sequence
repetition, ``%`` formatting). Limits, stated plainly: a test whose expected value sits inside a probe (a
comprehension such as ``all(f(x) == x + 1 for x in ...)``, a call with the expected value as an argument) shows
that value to the child, and code that tampers with the harness can then report whatever makes that test pass;
the same holds for a trusted part the parent does not evaluate itself (a builtin outside its short list, such
as ``range``). Values of non-builtin types (``Fraction``, ``Decimal``, a class of the candidate) compare equal to
nothing.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import types
from dataclasses import dataclass
from typing import Any

__all__ = ["Judgement", "TestPlan", "judge", "plan_tests"]

SAFE_BUILTINS = (
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "float", "frozenset", "hex", "int", "isinstance",
    "len", "list", "max", "min", "oct", "ord", "round", "set", "sorted", "str", "sum", "tuple",
)  # fmt: skip
SAFE_MATH = (
    "isclose", "sqrt", "floor", "ceil", "fabs", "trunc", "isnan", "isinf", "isfinite", "log", "log2", "log10",
    "exp", "sin", "cos", "tan", "atan", "atan2", "hypot", "copysign", "fsum", "gcd", "pi", "e", "tau", "inf",
    "nan",
)  # fmt: skip
_MATH = types.SimpleNamespace(**{name: getattr(math, name) for name in SAFE_MATH})
_COMBINATORS = (
    ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.IfExp, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Call,
)  # fmt: skip
_SAFE_NODES = (
    *_COMBINATORS, ast.Expression, ast.Constant, ast.Name, ast.Load, ast.keyword, ast.Subscript, ast.Slice,
    ast.Attribute, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip
MAX_POWER = 10_000  # |exponent| of an int ** int the parent computes
MAX_SHIFT = 100_000
MAX_REPEAT = 10_000_000  # elements/characters of a sequence repetition
MAX_DECODE_DEPTH = 100


@dataclass(frozen=True)
class _Check:
    source: str
    kind: str  # "assert": compare in the parent; "setup": the child must report it ran; "parent": ran here
    step: int | None = None  # the child's step of a "setup" statement
    code: Any = None  # an "assert"'s parent-side expression, compiled; probes are __probe__(k) calls
    probes: tuple[int, ...] = ()


@dataclass(frozen=True)
class TestPlan:
    """What to ship to the child and how to judge its reports.

    Attributes:
      steps: ``("exec", statement)`` or ``("eval", probe expression)`` pairs, run in order by the child.
      checks: one per top-level test statement (see the module docstring).
      env: the parent's trusted names (safe builtins, ``math``, values the tests assigned).
    """

    steps: tuple[tuple[str, str], ...]
    checks: tuple[_Check, ...]
    env: dict


@dataclass(frozen=True)
class Judgement:
    """The parent's verdict on one run's reports.

    Attributes:
      tests_passed, tests_total: checks that passed, and all checks (one per top-level statement).
      error: the first failure, described ('' when none).
      complete: the child loaded the solution and reported every step.
    """

    tests_passed: int
    tests_total: int
    error: str
    complete: bool


# --- planning -------------------------------------------------------------------------------------------------


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a statement or module binds (assignment targets, defs, classes, imports, loop/with/except targets)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def _free_names(node: ast.AST) -> set[str]:
    """Names an expression reads, minus those bound inside it (comprehension targets, lambda arguments)."""
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    local = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for n in ast.walk(node):
        if isinstance(n, ast.Lambda):
            local.update(a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg))
    return loaded - local


def _literal(value: Any) -> ast.expr | None:
    """The value as a literal expression when it round-trips exactly (inlined into probes), else None."""
    try:
        text = repr(value)
        if len(text) > 100_000 or ast.literal_eval(text) != value:
            return None
        return ast.parse(text, mode="eval").body
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


class _Planner:
    def __init__(self, solution_names: set[str]) -> None:
        self.env: dict[str, Any] = {
            name: getattr(builtins, name) for name in SAFE_BUILTINS if name not in solution_names
        }
        self.inline: dict[str, ast.expr] = {}  # trusted names whose value is a literal
        self.steps: list[tuple[str, str]] = []

    # a sub-expression the parent may evaluate by itself: safe node types, trusted names only
    def is_safe(self, node: ast.AST) -> bool:
        for n in ast.walk(node):
            if not isinstance(n, _SAFE_NODES) or isinstance(n, ast.Starred):
                return False
            if isinstance(n, ast.Name) and n.id not in self.env:
                return False
            if isinstance(n, ast.Attribute) and not (
                isinstance(n.value, ast.Name) and self.env.get(n.value.id) is _MATH and n.attr in SAFE_MATH
            ):
                return False
            if isinstance(n, ast.Call) and (
                not isinstance(n.func, (ast.Name, ast.Attribute)) or any(k.arg is None for k in n.keywords)
            ):
                return False
        return True

    def depends(self, node: ast.AST) -> bool:
        return bool(_free_names(node) - set(self.env))

    def probe(self, node: ast.expr) -> ast.expr:
        inline = self.inline

        class Inline(ast.NodeTransformer):
            def visit_Name(self, name: ast.Name) -> ast.AST:
                return inline[name.id] if isinstance(name.ctx, ast.Load) and name.id in inline else name

        source = ast.unparse(Inline().visit(_copy(node)))
        self.steps.append(("eval", source))
        index = len(self.steps) - 1
        return ast.Call(ast.Name("__probe__", ast.Load()), [ast.Constant(index)], [])

    def whole_probe(self, node: ast.expr) -> bool:
        """Whether a candidate-dependent ``node`` is one probe (not a combinator the parent evaluates)."""
        if not isinstance(node, _COMBINATORS) or _has_star(node):
            return True
        if isinstance(node, ast.Call):
            if not self.is_safe(node.func):
                return True
            if len(node.args) == 1 and not node.keywords and self.whole_probe(node.args[0]):
                return True  # sorted(f(x)), len(f(x)): no trusted value inside, and a map/iterator is fine
        return False

    def split(self, node: ast.expr) -> ast.expr:
        """``node`` with every part that needs the candidate replaced by a probe."""
        if not self.depends(node):
            return node if self.is_safe(node) else self.probe(node)
        if self.whole_probe(node):
            return self.probe(node)
        return _map_children(node, self.split)

    def plan(self, statement: ast.stmt, source: str) -> _Check:
        if isinstance(statement, ast.Assert):
            expression = ast.Expression(_Guard().visit(self.split(statement.test)))
            return _Check(
                source, "assert", code=compile(ast.fix_missing_locations(expression), "<test>", "eval")
            )
        if _is_math_import(statement):
            for alias in statement.names:
                value = _MATH if isinstance(statement, ast.Import) else getattr(_MATH, alias.name)
                self.env[alias.asname or alias.name] = value
            self.steps.append(("exec", source))
            return _Check(source, "setup", step=len(self.steps) - 1)
        if self._trusted_assignment(statement):
            return _Check(source, "parent")
        for name in _bound_names(statement):  # the candidate's from now on
            self.env.pop(name, None)
            self.inline.pop(name, None)
        self.steps.append(("exec", source))
        return _Check(source, "setup", step=len(self.steps) - 1)

    def _trusted_assignment(self, statement: ast.stmt) -> bool:
        if not (
            isinstance(statement, ast.Assign)
            and all(isinstance(t, ast.Name) for t in statement.targets)
            and not self.depends(statement.value)
            and self.is_safe(statement.value)
        ):
            return False
        expression = ast.Expression(_Guard().visit(_copy(statement.value)))
        try:
            value = eval(compile(ast.fix_missing_locations(expression), "<test>", "eval"), self.namespace())
        except Exception:
            return False  # let the child run it (and fail there, as plain Python would)
        literal = _literal(value)
        for target in statement.targets:
            self.env[target.id] = value
            if literal is not None:
                self.inline[target.id] = literal
            else:
                self.inline.pop(target.id, None)
        if literal is None:
            self.steps.append(("exec", ast.unparse(statement)))
        return True

    def namespace(self) -> dict:
        return {"__builtins__": {}, "__binop__": _binop, **self.env}


def _is_math_import(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Import):
        return all(alias.name == "math" for alias in statement.names)
    return (
        isinstance(statement, ast.ImportFrom)
        and statement.module == "math"
        and statement.level == 0
        and all(alias.name in SAFE_MATH for alias in statement.names)
    )


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node), mode="eval").body if isinstance(node, ast.expr) else node


def _has_star(node: ast.AST) -> bool:
    children = [*ast.iter_child_nodes(node)]
    return any(isinstance(c, ast.Starred) for c in children) or (
        isinstance(node, ast.Dict) and any(k is None for k in node.keys)
    )


def _map_children(node: ast.expr, split) -> ast.expr:
    """A shallow copy of a combinator node with ``split`` applied to its operand expressions."""
    if isinstance(node, ast.Call):  # the callee stays (it is a safe builtin)
        keywords = [ast.keyword(k.arg, split(k.value)) for k in node.keywords]
        return ast.Call(node.func, [split(a) for a in node.args], keywords)
    if isinstance(node, ast.Compare):
        return ast.Compare(split(node.left), node.ops, [split(c) for c in node.comparators])
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(node.op, [split(v) for v in node.values])
    if isinstance(node, ast.UnaryOp):
        return ast.UnaryOp(node.op, split(node.operand))
    if isinstance(node, ast.BinOp):
        return ast.BinOp(split(node.left), node.op, split(node.right))
    if isinstance(node, ast.IfExp):
        return ast.IfExp(split(node.test), split(node.body), split(node.orelse))
    if isinstance(node, ast.Dict):
        return ast.Dict([split(k) for k in node.keys], [split(v) for v in node.values])
    return type(node)([split(e) for e in node.elts], ast.Load())  # Tuple, List, Set


_GUARDED_OPS = {ast.Pow: "**", ast.LShift: "<<", ast.Mult: "*", ast.Mod: "%"}


class _Guard(ast.NodeTransformer):
    """``a ** b``, ``a << b``, ``a * b`` and ``a % b`` as ``__binop__("op", a, b)``, which checks sizes first."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        op = _GUARDED_OPS.get(type(node.op))
        if op is None:
            return node
        return ast.Call(ast.Name("__binop__", ast.Load()), [ast.Constant(op), node.left, node.right], [])


def _binop(op: str, a: Any, b: Any) -> Any:
    ints = isinstance(a, int) and isinstance(b, int)
    if op == "**":
        if ints and abs(b) > MAX_POWER and abs(a) > 1:
            raise ValueError(f"the parent does not compute int ** {b} (exponent over {MAX_POWER})")
        return a**b
    if op == "<<":
        if ints and b > MAX_SHIFT:
            raise ValueError(f"the parent does not compute << {b}")
        return a << b
    if op == "%":
        if isinstance(a, (str, bytes)):
            raise TypeError("the parent does not evaluate %-formatting")
        return a % b
    for sequence, count in ((a, b), (b, a)):
        sized = isinstance(sequence, (str, bytes, list, tuple)) and isinstance(count, int)
        if sized and len(sequence) * count > MAX_REPEAT:
            raise ValueError(f"the parent does not build a sequence of over {MAX_REPEAT} elements")
    return a * b


def plan_tests(tests: str, code: str = "") -> TestPlan:
    """Split ``tests`` (top-level statements, asserts checked) into probes for the child and checks for the parent.

    ``code`` is the candidate's solution: names it defines at top level are the candidate's even when they
    shadow a builtin. Raises ``ValueError`` when ``tests`` does not parse or has no top-level ``assert``.
    """
    try:
        module = ast.parse(tests, "tests.py")
    except SyntaxError as error:
        raise ValueError(f"the tests do not parse: {error}") from None
    if not any(isinstance(s, ast.Assert) for s in module.body):
        raise ValueError(
            "the tests have no top-level assert statement; the sandbox checks only top-level asserts "
            "(e.g. 'assert f(2) == 4'), compared outside the candidate's process"
        )
    try:
        solution_names = _bound_names(ast.parse(code))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        solution_names = set()  # it will fail to load in the child anyway
    planner = _Planner(solution_names)
    checks = []
    for statement in module.body:
        source = ast.get_source_segment(tests, statement) or ast.unparse(statement)
        before = len(planner.steps)
        check = planner.plan(statement, source)
        if check.kind == "assert":
            probes = tuple(i for i in range(before, len(planner.steps)) if planner.steps[i][0] == "eval")
            check = _Check(source, "assert", code=check.code, probes=probes)
        checks.append(check)
    return TestPlan(steps=tuple(planner.steps), checks=tuple(checks), env=planner.namespace())


# --- judging --------------------------------------------------------------------------------------------------


class _Opaque:
    """A reported value of a non-builtin type: any use but identity raises, so it never equals anything."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a {self.type_name} object cannot be compared outside the sandbox")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = __iter__ = __contains__ = (
        _refuse
    )
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def _decode(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DECODE_DEPTH:
        raise ValueError("the reported value is nested too deeply")
    if isinstance(value, list):
        return [_decode(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError("malformed report")
    ((tag, payload),) = value.items()
    if tag == "?":
        return _Opaque(str(payload))
    if tag == "b":
        return bytes.fromhex(payload)
    if tag == "c":
        return complex(float(payload[0]), float(payload[1]))
    if tag == "d":
        return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in payload}
    kinds = {"t": tuple, "s": set, "fs": frozenset}
    if tag not in kinds or not isinstance(payload, list):
        raise ValueError("malformed report")
    return kinds[tag](_decode(v, depth + 1) for v in payload)


class _ProbeError(Exception):
    pass


def _parse_reports(text: str) -> tuple[str | None, dict[int, dict], bool, bool]:
    """(load error or None, step index -> report, loaded, done) from the child's JSON lines (first one wins)."""
    load_error, steps, loaded, done = None, {}, False, False
    for line in text.splitlines():
        try:
            report = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(report, dict):
            continue
        if "load" in report and not loaded and load_error is None:
            load_error = report["load"] if report["load"] is not None else None
            loaded = report["load"] is None
        elif isinstance(report.get("i"), int) and report["i"] not in steps:
            steps[report["i"]] = report
        elif report.get("done") is True:
            done = True
    return (str(load_error) if load_error is not None else None), steps, loaded, done


def judge(plan: TestPlan, reports: str, *, stopped: str = "") -> Judgement:
    """Judge the child's ``reports`` (its result-fd text) against ``plan``; ``stopped`` says why it ended early."""
    load_error, steps, loaded, done = _parse_reports(reports)
    total = len(plan.checks)
    if not loaded:
        reason = (
            f"while loading the solution: {load_error}"
            if load_error
            else stopped or "no report from the sandbox"
        )
        return Judgement(0, total, reason, False)
    cache: dict[int, Any] = {}

    def probe(index: int) -> Any:
        if index not in cache:
            report = steps.get(index)
            if report is None:
                raise _ProbeError(stopped or "the sandbox stopped before reporting this value")
            if "e" in report:
                raise _ProbeError(str(report["e"]))
            try:
                cache[index] = _decode(report.get("v"))
            except (ValueError, TypeError, RecursionError) as error:
                raise _ProbeError(f"unreadable report: {error}") from None
        return cache[index]

    namespace = {**plan.env, "__probe__": probe}
    passed, error = 0, ""
    for check in plan.checks:
        problem = _run_check(check, steps, namespace, plan)
        if problem is None:
            passed += 1
        elif not error:
            error = problem.replace("\n", " ")[:300]
    complete = done and all(i in steps for i in range(len(plan.steps)))
    return Judgement(passed, total, error, complete)


def _run_check(check: _Check, steps: dict[int, dict], namespace: dict, plan: TestPlan) -> str | None:
    """None when the check passed, else what went wrong."""
    if check.kind == "parent":
        return None
    if check.kind == "setup":
        report = steps.get(check.step)
        if report is None:
            return f"{check.source}: not run (the sandbox stopped)"
        return None if report.get("ok") is True else f"{check.source}: {report.get('e', 'failed')}"
    try:
        if bool(eval(check.code, namespace)):
            return None
    except _ProbeError as failure:
        return f"{check.source}: {failure}"
    except Exception as failure:  # a reported value the comparison cannot use
        return f"{check.source}: {type(failure).__name__}: {failure}"
    got = [
        f"{plan.steps[i][1]} returned {_short(steps[i].get('v'))}"
        for i in check.probes
        if "v" in steps.get(i, {})
    ]
    return f"AssertionError: {check.source}" + (f" ({'; '.join(got)})" if got else "")


def _short(value: Any) -> str:
    try:
        text = repr(_decode(value))
    except (ValueError, TypeError, RecursionError):
        text = "?"
    return text if len(text) <= 80 else text[:77] + "..."
