"""A test with a guest that does not pass runs again, on a fresh guest: fail then pass is FLAKY, fail twice is the
failure with its first attempt kept, `--reruns=0` never reruns, and a test without a guest is pytest's alone.
The suite here brings its own `guest` fixture (nothing boots: what is tested is the plugin's protocol and
classification; the matrix e2e, tests/test_matrix_e2e.py, plays the same on a real guest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import paths
from harness.results import kcidb, stability
from harness.results.load import load_run
from harness.results.report import write_report
from harness.results.summary import build_summary, format_summary
from tests.test_kcidb import plain_run

SUITE = '''
import pytest
from pathlib import Path

COUNTS = Path(__file__).with_name("counts")


@pytest.fixture(scope="session")
def machine():  # what the plugin's session keeps (its VMs): set up once, whatever is run again
    attempt("machine")
    return object()


@pytest.fixture
def guest(run_dir, machine):  # stands in for the plugin's (and, like it, makes the run directory): no VM
    return object()


def attempt(name):
    seen = dict(line.split() for line in COUNTS.read_text().splitlines()) if COUNTS.exists() else {}
    n = int(seen.get(name, 0)) + 1
    seen[name] = str(n)
    COUNTS.write_text("".join(f"{k} {v}\\n" for k, v in seen.items()))
    return n


def test_flaky(guest):
    assert attempt("flaky") > 1, "the first attempt fails"


def test_broken(guest):
    assert attempt("broken") < 0, f"fails every time"


def test_fine(guest):
    assert attempt("fine")


def test_without_a_guest():
    assert attempt("plain") > 1, "never rerun: no guest"
'''


def run(tmp_path: Path, *args: str) -> tuple[dict[str, dict], dict[str, str], str]:
    (tmp_path / "test_suite.py").write_text(SUITE)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--results-dir={results}",
                           f"--rootdir={tmp_path}", *args, str(tmp_path / "test_suite.py")], cwd=paths.REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HARNESS_NO_QEMU": "1"})
    outcomes = {r["test"].rsplit("::", 1)[1]: r for r in json.loads((results / "outcomes.json").read_text())}
    counts = dict(line.split() for line in (tmp_path / "counts").read_text().splitlines())
    return outcomes, counts, proc.stdout


def test_fail_then_pass_is_flaky_and_each_failure_keeps_its_first_attempt(tmp_path: Path) -> None:
    outcomes, counts, stdout = run(tmp_path)
    assert {name: r["outcome"] for name, r in outcomes.items()} == {
        "test_flaky": "FLAKY", "test_broken": "FAIL", "test_fine": "PASS", "test_without_a_guest": "FAIL"}
    assert counts == {"machine": "1", "flaky": "2", "broken": "2", "fine": "1", "plain": "1"}
    assert stdout.rstrip().splitlines()[-1].strip("= ").startswith("2 failed, 2 passed in ")  # no teardown error
    assert outcomes["test_flaky"]["reason"].startswith("FAIL on attempt 1 of 2, then passed on a fresh guest: "
                                                       "the first attempt fails")
    assert outcomes["test_flaky"]["extra"]["attempts"]["1"].startswith("FAIL: the first attempt")
    assert outcomes["test_broken"]["extra"]["attempts"]["1"].startswith("FAIL: fails every time")
    assert "FLAKY test_suite.py::test_flaky: FAIL on attempt 1 of 2" in stdout  # the closing summary lists it
    junit = (tmp_path / "results" / "junit.xml").read_text()  # the FLAKY case's outcome property, once
    assert junit.count('name="outcome" value="FLAKY"') == 1 and junit.count('name="outcome"') == 4


def test_reruns_0_never_reruns_and_3_tries_three_more_times(tmp_path: Path) -> None:
    outcomes, counts, _ = run(tmp_path, "--reruns=0")
    assert outcomes["test_flaky"]["outcome"] == "FAIL" and counts["flaky"] == "1" and counts["broken"] == "1"
    (tmp_path / "counts").unlink()
    outcomes, counts, _ = run(tmp_path, "--reruns=3")
    assert counts["broken"] == "4" and sorted(outcomes["test_broken"]["extra"]["attempts"]) == ["1", "2", "3"]
    assert outcomes["test_flaky"]["outcome"] == "FLAKY" and counts["flaky"] == "2"


def test_a_test_flaky_in_k_of_the_last_n_runs_is_unstable(tmp_path: Path) -> None:
    store, tree = tmp_path / "matrix-nightly", tmp_path / "linux"
    nights = {"20261201-020000": "FLAKY", "20261202-020000": "PASS", "20261203-020000": "FLAKY"}
    for name, outcome in nights.items():
        plain_run(store / name, "debian:linux-source-6.12=6.12.118-1", tree, tmp_path / "build",
                  {"test_munmap": outcome, "test_mprotect": "PASS"})
    for name in list(nights)[:2]:
        summary = write_report(store / name)  # what each night's report leaves for the next
        assert [f["test"].rsplit("::", 1)[1] for f in summary["flaky"]] == (["test_munmap"] if nights[name] == "FLAKY"
                                                                             else [])
    tonight = load_run(store / "20261203-020000")
    (found,) = stability.unstable(tonight)
    assert (found["test"].rsplit("::", 1)[1], found["flaky"], found["runs"]) == ("test_munmap", 2, 3)
    assert stability.unstable(tonight, k=3) == []  # not flaky often enough
    assert stability.unstable(tonight, n=2) == []  # its other flake is older than the window
    summary = build_summary(tonight, unstable=stability.unstable(tonight))
    assert summary["totals"]["flaky"] == 1 and not summary["failures"]
    text = format_summary(summary)
    assert "FLAKY (failed, then passed on a fresh guest):" in text and "FLAKY in 2 of the last 3 runs" in text
    doc = kcidb.document(store / "20261203-020000")
    flaky = [t for t in doc["tests"] if t["misc"]["outcome"] == "FLAKY"]
    assert [(t["status"], t["misc"]["flaky"]) for t in flaky] == [("PASS", True)]


UNBOOTABLE = '''
import pytest
from pathlib import Path
from harness.vm.machine import BootError

COUNTS = Path(__file__).with_name("counts")


@pytest.fixture
def guest(run_dir):  # as the plugin's when the kernel does not boot: its pool keeps the error for the session
    COUNTS.write_text(str(int(COUNTS.read_text()) + 1 if COUNTS.exists() else 1))
    raise BootError("TIMEOUT", "guest not ready within 1 s", Path(__file__))


def test_needs_a_guest(guest):
    pass
'''


def test_a_guest_that_never_booted_is_not_tried_again(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(UNBOOTABLE)
    results = tmp_path / "results"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--results-dir={results}",
                    f"--rootdir={tmp_path}", str(tmp_path / "test_suite.py")], cwd=paths.REPO, capture_output=True,
                   text=True, timeout=300, env={**os.environ, "HARNESS_NO_QEMU": "1"})
    (result,) = json.loads((results / "outcomes.json").read_text())
    assert result["outcome"] == "TIMEOUT" and (tmp_path / "counts").read_text() == "1", result
