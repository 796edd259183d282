"""The code's shape, checked the way a reader would check it by hand: no import cycles between the project's
modules, no source file over 600 lines, no long functions in the LLM side, arms that never touch the budget."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llm_rl", "tree_search", "verifiers", "go_baseline", "relabel_rl")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Every module of the five packages, by dotted name (a package is its ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` depends on: every ``import`` anywhere in the file (inside functions too),
    those under ``if TYPE_CHECKING:`` included: an import kept for annotations never runs, but it is still a
    dependency, and a cycle through it is one a reader and a type checker must untangle. ``from a import b`` is an
    edge to the module ``a.b`` when that is a module, else to ``a``. (Importing ``a.b`` also runs the package
    ``a``'s ``__init__``; a package re-exporting its own submodules is not counted as a cycle through that.)"""
    is_package = path.name == "__init__.py"
    edges: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                edges.add(_resolve(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                edges.add(_resolve(f"{base}.{alias.name}", known) or _resolve(base, known))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {e for e in edges if e and e != module}


def _resolve(name: str, known: set[str]) -> str:
    """The longest known module that ``name`` is or lies in ('' for a module outside the project)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in known:
            return candidate
    return ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    known = set(modules)
    graph = {m: _imports(m, p, known) for m, p in modules.items()}
    assert graph["llm_rl.harness.loop"] >= {
        "llm_rl.harness.session",
        "llm_rl.arms.base",
    }  # the walk sees imports
    assert "llm_rl.model.policy" in graph["llm_rl.arms.base"]  # annotation-only imports count too
    assert _cycles(graph) == []


def test_dependencies_point_one_way():
    """go_baseline -> tree_search <- llm_rl -> verifiers (all may use relabel_rl)."""
    modules = _modules()
    known = set(modules)
    allowed = {
        "relabel_rl": {"relabel_rl"},
        "tree_search": {"tree_search", "relabel_rl"},
        "verifiers": {"verifiers", "relabel_rl"},
        "go_baseline": {"go_baseline", "tree_search", "relabel_rl"},
        "llm_rl": {"llm_rl", "tree_search", "verifiers", "relabel_rl"},
    }
    bad = [
        (m, e)
        for m, p in modules.items()
        for e in _imports(m, p, known)
        if e.split(".")[0] not in allowed[m.split(".")[0]]
    ]
    assert bad == []


@pytest.mark.parametrize("package", [*PACKAGES, "tests"])
def test_no_source_file_exceeds_600_lines(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_llm_side_functions_are_short():
    """No function of llm_rl or relabel_rl over 80 lines (docstring included) unless a ``# long:`` comment on
    the line above its ``def`` says why."""
    long = []
    for package in ("llm_rl", "relabel_rl"):
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    reason = first >= 2 and lines[first - 2].strip().startswith("# long:")
                    if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and not reason:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []


def test_arms_never_touch_the_budget():
    """``grep -rn "budget\\.\\|add_verifier_calls" llm_rl/arms/`` finds nothing: metered resources count."""
    pattern = re.compile(r"budget\.|add_verifier_calls")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "llm_rl" / "arms").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_llm_rl_imports_its_own_modules_at_the_top():
    """Imports inside functions hide cycles; the LLM side keeps only the lazy imports of heavy optional
    libraries (TRL, vLLM), each with its reason beside it."""
    lazy = []
    for path in (ROOT / "llm_rl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        names = [a.name for a in sub.names] if isinstance(sub, ast.Import) else [sub.module]
                        lazy += [(path.name, n) for n in names if n.split(".")[0] not in ("trl", "vllm")]
    assert lazy == []
