"""The pytest plugin is installed, not configured: a maintainer's suite in a directory of its own gets the
harness's fixtures and markers with no `-p`, and a session that uses none of them leaves no results behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SUITE = '''\
import pytest


def test_the_plugin_came_from_its_entry_point(pytestconfig, run_dir):
    assert pytestconfig.pluginmanager.hasplugin("harness")  # the pytest11 name, not a -p module path
    assert str(run_dir.root) == pytestconfig.getoption("results_dir")


@pytest.mark.skip(reason="collected under --strict-markers is the point: skipped before any fixture")
@pytest.mark.needs_notifier
@pytest.mark.machine("numa2")
def test_the_markers_are_registered():
    pass
'''


def pytest_outside_the_repo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pytest` in a directory of its own: its own ini file, nothing of this repository's."""
    suite = tmp_path / "my-suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_mine.py").write_text(SUITE)
    return subprocess.run([sys.executable, "-m", "pytest", "--strict-markers", "-p", "no:cacheprovider",
                           f"--rootdir={suite}", *args], cwd=suite, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HARNESS_RESULTS": str(tmp_path / "results")})


def test_a_suite_outside_the_repo_gets_the_fixtures_and_markers(tmp_path: Path) -> None:
    results = tmp_path / "run"
    proc = pytest_outside_the_repo(tmp_path, f"--results-dir={results}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    outcomes = {r["test"]: r["outcome"] for r in json.loads((results / "outcomes.json").read_text())}
    assert outcomes == {"test_mine.py::test_the_plugin_came_from_its_entry_point": "PASS",
                        "test_mine.py::test_the_markers_are_registered": "SKIP"}
    assert (results / "junit.xml").exists(), "a named results directory gets the JUnit XML"


def test_a_session_that_names_no_results_dir_and_uses_no_fixture_leaves_no_results(tmp_path: Path) -> None:
    proc = pytest_outside_the_repo(tmp_path, "-k", "markers")  # the one test that uses no harness fixture
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists(), "no run directory for a session that used none"
    assert not list(tmp_path.rglob("junit.xml"))
