"""The one results model (harness/results/): one severity order, records written and read by the same
code, one JUnit reader, one run-directory layout. The runs here are written by the pytest plugin itself,
in a pytest of their own that boots nothing, and read by `harness report` and `harness driver` alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.matrix import runner
from harness.matrix.spec import Cell
from harness.results import junit, load, report, rundir
from harness.results.model import (
    Attempt,
    Boot,
    Build,
    CellRecord,
    FailedBuild,
    Result,
    RunRecord,
    Timings,
    read_results,
    write_results,
)
from harness.results.outcome import FAILED, GREEN, SEVERITY, Outcome, worst

# These runs take no time, so the report's times plot has nothing to put on its log scale.
pytestmark = pytest.mark.filterwarnings("ignore:Data has no positive values:UserWarning")

INFRA_AND_FAIL = """
from harness.results.outcome import GuestUnreachable


def test_unreachable(run_dir):
    raise GuestUnreachable("guest stopped answering: connection reset")


def test_wrong(run_dir):
    assert 1 == 2, "the kernel said no"
"""

GREEN_ONES = """
import pytest


def test_right(run_dir):
    pass


def test_known_bug(run_dir):
    pytest.xfail("known kernel failure: a bug")


def test_no_device(run_dir):
    pytest.skip("no device")
"""


def plugin_run(tmp_path: Path, suite: str, *args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`suite` run by pytest with the harness plugin (its pytest11 entry point), as `harness run` runs one."""
    (tmp_path / "test_suite.py").write_text(suite)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_suite.py", f"--results-dir={results}",
                           "-o", "junit_family=xunit2", "-p", "no:cacheprovider", f"--rootdir={tmp_path}", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return results, proc


def test_report_and_driver_agree_on_infra_and_fail(tmp_path: Path):
    """One INFRA and one FAIL: a real FAIL outranks INFRA in `harness report` and in `harness driver`."""
    run_dir, proc = plugin_run(tmp_path, INFRA_AND_FAIL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outcomes = {r.test: r.outcome for r in read_results(rundir.RunDir(run_dir).outcomes)}
    assert outcomes == {"test_suite.py::test_unreachable": Outcome.INFRA, "test_suite.py::test_wrong": Outcome.FAIL}
    (cell,) = load.load_run(run_dir).cells
    verdict = junit.run_verdict(run_dir)
    assert cell.outcome == Outcome.FAIL
    assert verdict.status == "FAIL"
    assert verdict.counts == {Outcome.FAIL: 1, Outcome.INFRA: 1}
    assert verdict.line() == "FAIL (1 fail, 1 infra)"
    summary = report.write_report(run_dir)
    assert summary["totals"]["cell_outcomes"] == {"FAIL": 1}
    assert [f["outcome"] for f in summary["failures"]] == ["FAIL"]
    assert [i["outcome"] for i in summary["infra"]] == ["INFRA"]


def test_an_xfail_is_its_own_outcome_and_pytest_counts_stay(tmp_path: Path):
    run_dir, proc = plugin_run(tmp_path, GREEN_ONES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped, 1 xfailed" in proc.stdout
    results = {r.test.rsplit("::", 1)[1]: r for r in read_results(rundir.RunDir(run_dir).outcomes)}
    assert {name: r.outcome for name, r in results.items()} == {
        "test_right": Outcome.PASS, "test_known_bug": Outcome.XFAIL, "test_no_device": Outcome.SKIP}
    assert results["test_known_bug"].reason == "known kernel failure: a bug"
    verdict = junit.run_verdict(run_dir)
    assert (verdict.status, verdict.line()) == ("PASS", "PASS (1 pass, 1 xfail, 1 skip)")
    assert verdict.notes == ["XFAIL test_known_bug: known kernel failure: a bug"]
    (cell,) = load.load_run(run_dir).cells
    assert cell.outcome == Outcome.PASS
    assert report.write_report(run_dir)["totals"]["test_outcomes"] == {"PASS": 1, "XFAIL": 1, "SKIP": 1}
    assert junit.run_summary(run_dir).splitlines()[0] == "summary: 1 pass, 1 xfail, 1 skip"


def test_one_severity_order():
    assert sorted(SEVERITY) == sorted(Outcome) and len(set(SEVERITY)) == len(SEVERITY)
    assert worst([Outcome.INFRA, Outcome.FAIL]) == Outcome.FAIL
    assert worst([Outcome.ERROR, Outcome.INFRA]) == Outcome.ERROR
    assert worst([Outcome.FAIL, Outcome.TIMEOUT, Outcome.CRASH]) == Outcome.CRASH
    assert worst([Outcome.PASS, Outcome.SKIP, Outcome.XFAIL]) == Outcome.PASS
    assert worst([Outcome.XFAIL, Outcome.SKIP]) == Outcome.PASS  # a test ran: SKIP only when nothing did
    assert worst([Outcome.SKIP]) == Outcome.SKIP
    assert worst([]) is None
    assert FAILED.isdisjoint(GREEN) and Outcome.INFRA not in FAILED | GREEN


def test_records_read_back_as_written(tmp_path: Path):
    results = [Result("suites/test_a.py::test_x", Outcome.TIMEOUT, "watchdog", 1.5, "/r/vm-1/console.log",
                      "/r/tests/x/dmesg.txt", {"post_mortem": {"registers": "/r/tests/x/registers.txt"}}),
               Result("suites/test_a.py::test_y", Outcome.XFAIL, "known kernel failure: z")]
    write_results(tmp_path / "outcomes.json", results)
    assert read_results(tmp_path / "outcomes.json") == results
    assert results[0].post_mortem == {"registers": "/r/tests/x/registers.txt"}
    assert read_results(tmp_path / "missing.json") == []

    cell = Cell("debian:6.1", "on", "default", "suites/test_hmm.py", fragment="debug/kasan")
    record = CellRecord(cell, Outcome.ERROR, "kernel build failed", cell.reproducer(),
                        [Attempt(Outcome.INFRA, "no results", 1, "t0", 3.0, "c.attempt-1"),
                         Attempt(Outcome.ERROR, "kernel build failed", dir="c")], 3.0,
                        FailedBuild("../builds/x.log", cell.build_reproducer(), "make failed"), "nightly")
    record.write(tmp_path / "cell.json")
    assert CellRecord.read(tmp_path / "cell.json") == record
    assert CellRecord.read(tmp_path / "none.json") is None

    run = RunRecord("nightly", "configs/matrix/nightly.yaml", "t0", "t1", 9.5, 2, [cell.id],
                    [Build("debian:6.1", "on", False, 3.0, "builds/x.log", "make failed", "debug/kasan")], True)
    run.write(tmp_path / "run.json")
    assert RunRecord.read(tmp_path / "run.json") == run

    timings = Timings({"source_s": 0.1, "kernel_s": 2.0}, [Boot(1, 2.4, "tcg", 120.0), Boot(2, None)])
    timings.write(tmp_path / "timings.json")
    assert Timings.read(tmp_path / "timings.json") == timings


@pytest.mark.parametrize(("nodeid", "folder"), [
    ("suites/test_hmm.py::test_hmm[hmm.anon_read]", "suites_test_hmm.py_test_hmm_hmm.anon_read_"),
    ("::test_top", "test_top"),
])
def test_a_test_folder_is_named_once(tmp_path: Path, nodeid: str, folder: str):
    assert rundir.test_dir_name(nodeid) == folder.strip("_")
    assert rundir.RunDir(tmp_path).test_dir(nodeid) == tmp_path / "tests" / folder.strip("_")
    assert not (tmp_path / "tests").exists(), "naming a folder makes nothing"


def test_new_run_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One function names a run's directory for `harness run` and for the matrix (in its store)."""
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    assert rundir.new_run_dir("given/dir") == Path("given/dir")
    first = rundir.new_run_dir()
    assert first == tmp_path / "results" / "20260101-000000" and not first.exists()
    first.mkdir(parents=True)
    assert rundir.new_run_dir() == tmp_path / "results" / "20260101-000000-2"
    store = runner.store("nightly")
    assert rundir.new_run_dir(store=store) == tmp_path / "results" / "matrix-nightly" / "20260101-000000"


def test_run_summary_counts_each_outcome(tmp_path: Path):
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="3" failures="1" errors="1" skipped="0">'
        '<testcase classname="s" name="a"/>'
        '<testcase classname="s" name="b"><failure message="assert 1 == 2&#10;more">trace</failure></testcase>'
        '<testcase classname="s" name="c"><error message="fixture broke"/></testcase>'
        "</testsuite></testsuites>")
    assert junit.run_summary(tmp_path) == f"summary: 1 fail, 1 error, 1 pass\nresults: {tmp_path}"
    assert junit.run_summary(tmp_path / "none") == f"no results were written; see {tmp_path / 'none'}"
