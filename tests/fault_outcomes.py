"""The outcome each fault-suite test must end in: its `@pytest.mark.expect_outcome("CRASH")` marker.

Read as `harness run` will see the suite: pytest collects it in a process of its own, with this module
as a plugin that writes each test id's expected outcome to a JSON file. A test without the marker, or
with an outcome that harness/results/outcome.py does not define, stops that collection with an error:
a typo cannot change what a test is expected to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import paths
from harness.results.outcome import Outcome


class SuiteError(Exception):
    """A fault suite whose expected outcomes cannot be read."""


def expected_outcomes(suite: Path) -> dict[str, str]:
    """Test id (as `harness run` writes it in outcomes.json) -> the outcome that test must end in."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "expected-outcomes.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers",
                               "-p", "no:cacheprovider", "-p", "tests.fault_outcomes", f"--expected-outcomes={out}",
                               f"--rootdir={paths.REPO}", "-c", str(paths.REPO / "pyproject.toml"), str(suite)],
                              cwd=paths.REPO, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SuiteError(f"cannot read the expected outcomes of {suite}:\n{proc.stdout[-3000:]}{proc.stderr}")
        expected: dict[str, str] = json.loads(out.read_text())
    return expected


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--expected-outcomes", metavar="JSON", help="write each test's expect_outcome to JSON")


def pytest_collection_finish(session: pytest.Session) -> None:
    path = session.config.getoption("expected_outcomes")
    if path:
        Path(path).write_text(json.dumps({item.nodeid: expected_outcome(item) for item in session.items}, indent=1))


def expected_outcome(item: pytest.Item) -> str:
    marker = item.get_closest_marker("expect_outcome")
    if marker is None:
        pytest.exit(f"{item.nodeid} has no @pytest.mark.expect_outcome(...)", pytest.ExitCode.USAGE_ERROR)
    if len(marker.args) != 1 or marker.args[0] not in Outcome.__members__:
        pytest.exit(f"{item.nodeid}: expect_outcome{marker.args} is not one of {', '.join(Outcome)}",
                    pytest.ExitCode.USAGE_ERROR)
    outcome: str = marker.args[0]
    return outcome
