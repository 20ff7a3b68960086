"""The code's shape, checked: the README's module tree is the package's, no module is over 500 lines, and the
layers of pyproject.toml's import-linter contracts hold (each layer imports only those below it, and no import
cycle joins two modules or two packages); and commands reach each other only through harness/app/."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "harness"
MAX_LINES = 500


def modules() -> set[str]:
    """Every module of the package, by its path under harness/ ("kernel/build.py", "errors.py")."""
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def readme_tree() -> set[str]:
    """The modules the README's architecture block names: `pkg/  a.py  b.py` lines, their continuation lines
    (indented further), and lines of top-level modules."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^## Architecture\n.*?```\n(harness/\n.*?)```", text, re.S | re.M)
    assert block, "README.md has no architecture block starting with `harness/`"
    named: set[str] = set()
    package = ""
    for line in block.group(1).splitlines()[1:]:
        words = line.split()
        if words and words[0].endswith("/"):
            package, words = words[0], words[1:]
        elif len(line) - len(line.lstrip()) <= 2:
            package = ""  # a line of the package's own modules
        named.update(package + word for word in words)
    return named


def test_the_readme_tree_is_the_package() -> None:
    named, on_disk = readme_tree(), modules()
    assert sorted(named - on_disk) == [], "README's architecture tree names modules that do not exist"
    assert sorted(on_disk - named) == [], "modules missing from README's architecture tree"


def test_the_tree_reader_sees_a_drift() -> None:
    assert "kernel/build.py" in readme_tree() and "errors.py" in readme_tree()
    assert "kernel/nothing.py" not in readme_tree()


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_over_500_lines(module: str) -> None:
    lines = len((PACKAGE / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"harness/{module} has {lines} lines: split it by job"


def test_the_layers_and_no_cycles_hold() -> None:
    """import-linter, as `make lint` runs it: a broken contract names the import that breaks it."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_a_command_module_imports_no_other_command() -> None:
    """cli/ modules share options.py, output.py and main.py (which registers them all); a command that wants
    another's work calls its use case in harness/app/, never the other command's module."""
    shared = {"main.py", "options.py", "output.py", "__init__.py", "__main__.py"}
    commands = {f"harness.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py") if p.name not in shared}
    for path in (PACKAGE / "cli").glob("*.py"):
        if path.name in shared:
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        others = (found & commands) - {f"harness.cli.{path.stem}"}
        assert not others, f"{path.name} imports {sorted(others)}: commands reach each other through harness/app/"
