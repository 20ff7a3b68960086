"""pytest's closing summary under the harness plugin: one line per test that did not pass, the whole
reasons in outcomes.json (harness/pytest_plugin.py:pytest_terminal_summary)."""

from __future__ import annotations

from pathlib import Path

from harness.results import rundir
from harness.results.model import read_results
from tests.test_results_model import plugin_run

KNOWN = "known kernel failure: HMM_DMIRROR_EXCLUSIVE returns -EBUSY on a THP-backed buffer: " + "why. " * 120

SUITE = f'''
import pytest
from harness.results.outcome import GuestCrash

KNOWN = {KNOWN!r}


@pytest.mark.parametrize("case", ["exclusive", "exclusive_mprotect", "exclusive_cow"])
def test_known_bug(run_dir, case):
    pytest.xfail(KNOWN + "\\nsecond line of the reason")


def test_wrong(run_dir):
    assert 1 == 2, "the guest said 2"


def test_crashed(run_dir):
    raise GuestCrash("kernel panic: Oops in mm/rmap.c", None)


def test_no_device(run_dir):
    pytest.skip("no virtio-gpu device in this machine")


def test_right(run_dir):
    pass
'''


def test_one_line_per_result_that_did_not_pass(tmp_path: Path):
    run_dir, proc = plugin_run(tmp_path, SUITE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if " 6 not passed " in line)
    assert str(run_dir / "outcomes.json") in lines[header], lines[header]
    listed = lines[header + 1:header + 7]
    # worst first: the crash, the failure, the known bugs, the skip; each one line, none of them repeated
    assert [line.split(" ", 2)[:2] for line in listed] == [
        ["CRASH", "test_suite.py::test_crashed:"], ["FAIL", "test_suite.py::test_wrong:"],
        ["XFAIL", "test_suite.py::test_known_bug[exclusive]:"],
        ["XFAIL", "test_suite.py::test_known_bug[exclusive_cow]:"],
        ["XFAIL", "test_suite.py::test_known_bug[exclusive_mprotect]:"], ["SKIP", "test_suite.py::test_no_device:"]]
    assert "GuestCrash: kernel p" in listed[0]  # cut at the width, with a mark
    assert listed[0].endswith("…") and listed[5].endswith("no virtio-gpu device in this machine")
    assert all(len(line) <= 80 for line in listed), listed  # a pipe: pytest's 80 columns
    # The known bug's reason is in the output only as the start of its three lines; whole in outcomes.json
    assert proc.stdout.count("known kernel f") == 3
    assert "second line of the reason" not in proc.stdout and "why. why. why. why. why. why. why. why." \
        not in proc.stdout
    assert "short test summary info" not in proc.stdout  # pytest's own, which printed every reason whole
    reasons = {r.test: r.reason for r in read_results(rundir.RunDir(run_dir).outcomes)}
    assert reasons["test_suite.py::test_known_bug[exclusive]"] == KNOWN + "\nsecond line of the reason"
