"""The application layer's place: harness/cli/ modules reach each other and the pipeline only through
harness/app/ (and their shared options and output); nothing below the CLI imports it; the app imports no
command module. Read from the source (ast), as tests/test_results_layers.py does for results/."""

from __future__ import annotations

import ast
from pathlib import Path

from harness import paths

HARNESS = paths.REPO / "harness"
CLI_SHARED = {"harness.cli.options", "harness.cli.output", "harness.cli.main"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("harness")}
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(paths.REPO).with_suffix("").parts)


def test_a_command_module_imports_no_other_command():
    commands = {_module(p) for p in (HARNESS / "cli").glob("*.py")} - CLI_SHARED - {"harness.cli.__init__",
                                                                                    "harness.cli.__main__"}
    for path in (HARNESS / "cli").glob("*.py"):
        if _module(path) in CLI_SHARED:
            continue
        others = {m for m in imports(path) if m in commands and m != _module(path)}
        assert not others, f"{path.name} imports {sorted(others)}: commands reach each other through harness/app/"


def test_only_the_cli_imports_the_app_layer():
    for path in HARNESS.rglob("*.py"):
        if path.is_relative_to(HARNESS / "cli") or path.is_relative_to(HARNESS / "app"):
            continue
        assert not {m for m in imports(path) if m == "harness.app" or m.startswith("harness.app.")}, path


def test_the_app_layer_imports_no_command():
    for path in (HARNESS / "app").glob("*.py"):
        assert not {m for m in imports(path) if m.startswith("harness.cli")}, path


def test_no_module_of_the_app_layer_or_the_cli_is_over_500_lines():
    for path in [*(HARNESS / "app").glob("*.py"), *(HARNESS / "cli").glob("*.py"), HARNESS / "pytest_plugin.py",
                 HARNESS / "guest.py", HARNESS / "session.py", HARNESS / "vm" / "pool.py"]:
        assert len(path.read_text().splitlines()) <= 500, path
