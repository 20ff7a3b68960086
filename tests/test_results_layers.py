"""The results package is the model every command reads and writes: it imports none of the packages
that use it (matrix, checks, cli, the pytest plugin), and its modules form no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from harness import paths

RESULTS = paths.REPO / "harness" / "results"
ABOVE = ("harness.matrix", "harness.checks", "harness.cli", "harness.app", "harness.pytest_plugin", "harness.guest",
         "harness.session")


def _imports(path: Path) -> set[str]:
    """Every harness module the file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("harness")}
    return found


def test_results_imports_no_package_above_it():
    breaches = {f"{p.name}: {m}" for p in RESULTS.glob("*.py") for m in _imports(p)
                if any(m == a or m.startswith(f"{a}.") for a in ABOVE)}
    assert not breaches


def test_results_modules_form_no_cycle():
    modules = {p.stem: p for p in RESULTS.glob("*.py") if p.stem != "__init__"}
    graph = {name: {m.split(".")[2] for m in _imports(p) if m.startswith("harness.results.")} & modules.keys()
             for name, p in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert [name for name in graph if reaches(name, name, set())] == []
    assert len(graph["report"]) > 3  # the walk sees the imports: report.py reads through several modules


def test_no_results_module_is_over_500_lines():
    assert {p.name: n for p in RESULTS.glob("*.py") if (n := len(p.read_text().splitlines())) > 500} == {}
