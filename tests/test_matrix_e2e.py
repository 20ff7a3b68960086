"""End to end: a two-cell matrix on the real 6.12 kernel, run twice with one change in between.

One cell runs suites/test_notifier_events.py; the other a suite made here whose one test fails in the
first run and passes in the second. The first run's report must show one green cell and one failed
cell with the failing test's reproducer; the second must report exactly that test as fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import paths

pytestmark = pytest.mark.e2e

SUITE = '''
STATE = "{state}"


def test_guest_answers(guest):
    assert guest.run(["true"]).ok


def test_sees_the_change(guest):
    assert guest.run(["uname", "-r"]).ok
    assert STATE == "good", "this suite was written to fail"
'''


def run_matrix(matrix: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "matrix", "run", str(matrix), "--jobs", "2"],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HARNESS_RESULTS": str(results)})


def test_two_runs_of_a_tiny_matrix(tmp_path: Path):
    suite = tmp_path / "test_changing.py"
    suite.write_text(SUITE.format(state="bad"))
    matrix = tmp_path / "e2e.yaml"
    matrix.write_text(f"axes:\n  notifier: [on]\n  suite: [notifier_events, {suite}]\ntimeout: 600\n")
    results = tmp_path / "results"

    first = run_matrix(matrix, results)
    assert first.returncode == 1, first.stdout[-4000:] + first.stderr[-4000:]
    (run1,) = [p for p in (results / "matrix-e2e").iterdir() if not p.is_symlink()]
    summary = json.loads((run1 / "summary.json").read_text())
    cells = {c["id"]: c for c in summary["cells"]}
    assert {cid: c["outcome"] for cid, c in cells.items()} == {
        "6.12-on-default-notifier_events": "PASS", "6.12-on-default-changing": "FAIL"}, first.stdout[-4000:]
    (failure,) = summary["failures"]
    assert failure["test"].endswith("::test_sees_the_change")
    reproducer = f"harness run --kernel-src debian:6.12 --notifier on --machine default {suite} -k test_sees_the_change"
    assert failure["reproducer"] == reproducer
    assert reproducer in first.stdout
    events = cells["6.12-on-default-notifier_events"]["tests"][0]["events"]
    assert events and events.get("UNMAP", 0) >= 1, "the munmap workload's events.json feeds the events plot"
    assert all(c["boot_s"] and c["boot_s"][0] > 0 for c in cells.values())
    junit = ET.parse(run1 / "junit.xml").getroot()
    assert (junit.get("tests"), junit.get("failures")) == ("3", "1")
    page = (run1 / "report.html").read_text()
    assert reproducer in page and page.count("data:image/png;base64,") == 2
    for log in ("6.12-on-default-changing/harness.log", "6.12-on-default-changing/vm-1/console.log"):
        assert f'href="{log}"' in page and (run1 / log).exists()

    suite.write_text(SUITE.format(state="good"))  # the one change
    second = run_matrix(matrix, results)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert (results / "matrix-e2e" / "latest").resolve() != run1
    comparison = json.loads(((results / "matrix-e2e" / "latest") / "summary.json").read_text())["comparison"]
    assert comparison["previous"] == str(run1)
    assert [(i["cell"], i["test"].rsplit("::", 1)[1]) for i in comparison["fixes"]] == [
        ("6.12-on-default-changing", "test_sees_the_change")]
    for key in ("new_failures", "new_tests", "vanished_tests", "infra", "slower", "new_cells", "cells_not_run"):
        assert comparison[key] == [], (key, comparison[key])
    assert not comparison["regressed"]
    assert "fixes (1):" in second.stdout and "verdict: no regressions" in second.stdout


FLAKY = '''
from pathlib import Path

COUNTER = Path("{counter}")  # on the host: how often this test has run


def test_fails_every_other_run(guest):
    runs = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(runs + 1))
    assert guest.run(["true"]).ok
    assert runs % 2 == 1, f"run {{runs + 1}}: this test fails on every other run, on purpose"
'''


def test_a_planted_flaky_test_is_flaky_in_the_matrix_and_in_kcidb_then_unstable(tmp_path: Path):
    """Fails on its first attempt of each matrix run and passes on the rerun (on a fresh guest): FLAKY, not FAIL
    nor PASS, in the cell, the summary and KCIDB; the matrix still exits 0; after two such nights it is unstable."""
    counter = tmp_path / "runs"
    suite = tmp_path / "test_flaky.py"
    suite.write_text(FLAKY.format(counter=counter))
    matrix = tmp_path / "flaky.yaml"
    matrix.write_text(f"axes:\n  notifier: [on]\n  suite: [{suite}]\ntimeout: 600\n")
    results = tmp_path / "results"
    for night in (1, 2):
        done = run_matrix(matrix, results)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert counter.read_text() == str(2 * night), "each night: one failed attempt, one rerun"
        latest = (results / "matrix-flaky" / "latest").resolve()
        summary = json.loads((latest / "summary.json").read_text())
        (cell,) = summary["cells"]
        assert cell["outcome"] == "FLAKY" and [t["outcome"] for t in cell["tests"]] == ["FLAKY"]
        (flaky,) = summary["flaky"]
        assert "FAIL on attempt 1 of 2, then passed on a fresh guest" in flaky["reason"]
        assert "fails on every other run" in flaky["reason"] and not summary["failures"]
        assert "FLAKY (failed, then passed on a fresh guest)" in done.stdout
        timings = json.loads((latest / cell["dir"] / "timings.json").read_text())
        # the rerun had a guest of its own: a restore of the first boot's snapshot (harness/vm/pool.py)
        assert (len(timings["boots"]), len(timings["restores"])) == (1, 1), timings
        kcidb = tmp_path / f"kcidb-{night}.json"
        subprocess.run([sys.executable, "-m", "harness.cli", "report", str(latest), "--kcidb", str(kcidb)],
                       cwd=paths.REPO, check=True, capture_output=True, timeout=300)
        (test,) = [t for t in json.loads(kcidb.read_text())["tests"] if t["path"].endswith("fails_every_other_run")]
        assert (test["status"], test["misc"]["outcome"], test["misc"]["flaky"]) == ("PASS", "FLAKY", True)
    assert [(u["test"].rsplit("::", 1)[1], u["flaky"], u["runs"]) for u in summary["unstable"]] == [
        ("test_fails_every_other_run", 2, 2)]
    assert "unstable (FLAKY too often" in done.stdout
