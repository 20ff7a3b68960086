"""Tests on two pytest-xdist workers (`harness run -j 2`, make test): one run directory, every test's
result once in outcomes.json and JUnit (with its `outcome`), every worker's boots in timings.json, node
ids as a run without workers writes them, a machine profile's tests on one worker. No QEMU here: the
suites below use the plugin's run directory and write boot records themselves; tests/test_parallel_e2e.py
boots real guests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.app.run import xdist_args
from harness.parallel import Control
from harness.results.model import Boot, Timings
from harness.results.rundir import RunDir, point_latest

SUITE = '''\
import os
import time
import pytest
from harness.classify import ResultsLost
from harness.results.model import Boot


@pytest.fixture
def ran(run_dir, request):
    """Each test: a boot record of its worker, and a file that says which worker ran it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    run_dir.timings.boots.append(Boot(len(run_dir.timings.boots) + 1, 1.5, "tcg", 120.0))
    (run_dir.root / f"ran-{request.node.name}").write_text(worker)


@pytest.mark.skipif(not os.environ.get("PLANT_RESULTS_LOST"), reason="planted only when asked")
def test_results_lost(ran):
    raise ResultsLost("planted: the results directory stopped taking files")


@pytest.mark.parametrize("n", range(6))
def test_plain(ran, n):
    if os.environ.get("PLANT_RESULTS_LOST"):
        time.sleep(1)  # the run stops while these still wait


def test_fails(ran):
    assert 1 == 2, "planted"


@pytest.fixture
def broken():
    raise RuntimeError("planted setup error")


def test_errors(ran, broken):
    pass


@pytest.mark.machine("numa2")
@pytest.mark.parametrize("n", range(3))
def test_on_numa2(ran, n):
    pass


@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("n", range(2))
def test_grouped(ran, n):
    pass

'''
PLAIN = [f"test_suite.py::test_plain[{n}]" for n in range(6)]
NUMA2 = [f"test_suite.py::test_on_numa2[{n}]" for n in range(3)] + \
    [f"test_suite.py::test_grouped[{n}]" for n in range(2)]
OUTCOMES = {**dict.fromkeys(PLAIN + NUMA2, "PASS"), "test_suite.py::test_fails": "FAIL",
            "test_suite.py::test_errors": "ERROR", "test_suite.py::test_results_lost": "SKIP"}


def run_suite(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_suite.py").write_text(SUITE)
    return subprocess.run([sys.executable, "-m", "pytest", "--strict-markers", "-p", "no:cacheprovider",
                           f"--rootdir={suite}", f"--results-dir={tmp_path / 'run'}", *args],
                          cwd=suite, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HARNESS_RESULTS": str(tmp_path / "results"), **(env or {})})


def junit_outcomes(path: Path) -> dict[str, list[str]]:
    """Each JUnit case's name -> its `outcome` properties (a case reported twice would show twice)."""
    cases: dict[str, list[str]] = {}
    for case in ET.parse(path).iter("testcase"):
        props = [p.get("value", "") for p in case.iter("property") if p.get("name") == "outcome"]
        cases.setdefault(f"{case.get('classname')}::{case.get('name')}", []).extend(props)
    return cases


def test_two_workers_write_one_complete_run_directory(tmp_path: Path):
    proc = run_suite(tmp_path, *xdist_args(2))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the planted failure and error
    run = tmp_path / "run"
    results = json.loads((run / "outcomes.json").read_text())
    tests = [r["test"] for r in results]
    assert sorted(tests) == sorted(OUTCOMES), "every test once, named as without xdist"
    assert {r["test"]: r["outcome"] for r in results} == OUTCOMES
    reasons = {r["test"]: r["reason"] for r in results}
    assert reasons["test_suite.py::test_fails"].startswith("planted"), reasons
    assert reasons["test_suite.py::test_errors"] == "RuntimeError: planted setup error", reasons
    # JUnit, written by the controller: every case once, each with its one outcome.
    cases = junit_outcomes(run / "junit.xml")
    assert {name.replace("test_suite::", "test_suite.py::"): props for name, props in cases.items()} == \
        {test: [outcome] for test, outcome in OUTCOMES.items()}
    # timings.json: the boots of both workers, labelled; one per test that ran.
    timings = Timings.read(run / "timings.json")
    ran = {p.name.removeprefix("ran-"): p.read_text() for p in run.glob("ran-*")}
    assert len(timings.boots) == len(ran) == len(OUTCOMES) - 1  # test_results_lost was skipped
    assert {b.worker for b in timings.boots} == set(ran.values()) == {"gw0", "gw1"}
    for worker in ("gw0", "gw1"):
        vms = [b.vm for b in timings.boots if b.worker == worker]
        assert vms == list(range(1, len(vms) + 1)), timings.boots  # each worker's own, in boot order
    # The numa2 profile's tests ran on one worker, the one that would have booted that machine.
    assert len({ran[f"test_on_numa2[{n}]"] for n in range(3)}) == 1, ran
    # And so did the tests of a group named the xdist way.
    assert len({ran[f"test_grouped[{n}]"] for n in range(2)}) == 1, ran


def test_without_workers_the_run_directory_is_the_same(tmp_path: Path):
    proc = run_suite(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = tmp_path / "run"
    assert {r["test"]: r["outcome"] for r in json.loads((run / "outcomes.json").read_text())} == OUTCOMES
    timings = Timings.read(run / "timings.json")
    assert len(timings.boots) == len(OUTCOMES) - 1 and {b.worker for b in timings.boots} == {""}


def test_results_lost_on_one_worker_stops_the_run(tmp_path: Path):
    proc = run_suite(tmp_path, *xdist_args(2), "-k", "results_lost or plain", env={"PLANT_RESULTS_LOST": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "results can no longer be written: planted" in out, out
    results = {r["test"]: r["outcome"] for r in json.loads((tmp_path / "run" / "outcomes.json").read_text())}
    assert results["test_suite.py::test_results_lost"] == "ERROR", results
    assert len(results) < 7, f"the run went on after the results were lost: {results}"


def test_a_session_on_workers_that_uses_no_fixture_leaves_no_results(tmp_path: Path):
    proc = run_suite(tmp_path, *xdist_args(2), "-k", "results_lost")  # skipped before its fixtures
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "outcomes.json").exists()
    assert not (tmp_path / "run" / "timings.json").exists()


def test_merged_timings_label_every_boot_by_worker_and_keep_the_longest_prepare():
    gw0 = Timings({"source_s": 1.0, "kernel_s": 0.0, "image_s": 0.1}, [Boot(1, 2.5, "tcg", 120.0), Boot(2, 2.7)])
    gw1 = Timings({"source_s": 1.2, "kernel_s": 600.0, "image_s": 0.1}, [Boot(1, 2.6, "tcg", 120.0)])
    gw10 = Timings({}, [Boot(1, 3.0)])
    merged = Timings.merge({"gw10": gw10, "gw1": gw1, "gw0": gw0})
    assert merged.prepare == {"source_s": 1.2, "kernel_s": 600.0, "image_s": 0.1}
    assert [(b.worker, b.vm, b.boot_to_ssh_s) for b in merged.boots] == \
        [("gw0", 1, 2.5), ("gw0", 2, 2.7), ("gw1", 1, 2.6), ("gw10", 1, 3.0)]
    assert Timings.from_json(json.loads(json.dumps(merged.to_json()))) == merged  # the worker survives the file
    assert Timings.merge({}) == Timings()


def test_timings_of_a_run_before_workers_read_without_one():
    old = Timings.from_json({"boots": [{"vm": 1, "boot_to_ssh_s": 2.5, "accel": "tcg"}]})
    assert old.boots == [Boot(1, 2.5, "tcg")] and old.boots[0].worker == ""


def test_workers_vms_have_folders_of_their_own(tmp_path: Path):
    rd = RunDir(tmp_path)
    assert rd.vm_dir(1) == tmp_path / "vm-1"
    assert rd.vm_dir(2, "gw1") == tmp_path / "vm-gw1-2"
    for d in ("vm-gw0-1", "vm-gw1-1", "vm-gw0-2"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "console.log").write_text("x")
    (tmp_path / "vm-notes.txt").write_text("not a VM")
    assert [p.name for p in rd.vm_dirs()] == ["vm-gw0-1", "vm-gw0-2", "vm-gw1-1"]
    assert len(rd.console_logs()) == 3


def test_xdist_arguments():
    assert xdist_args(1) == []
    assert xdist_args(2) == ["-n", "2", "--dist", "loadgroup"]


def test_latest_is_replaced_whole(tmp_path: Path):
    link = tmp_path / "latest"
    point_latest(link, "20261128-110000")
    point_latest(link, "20261128-120000")
    assert os.readlink(link) == "20261128-120000"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # no temporary link left behind


def test_the_control_folder_merges_what_workers_leave(tmp_path: Path):
    controller = Control(tmp_path)
    gw0, gw1 = Control(tmp_path, "gw0"), Control(tmp_path, "gw1")
    assert not controller.run_dir_used() and controller.read_timings() == {} and controller.read_groups() == {}
    gw1.used_run_dir()
    gw0.write_timings(Timings({"kernel_s": 1.0}, [Boot(1, 2.0)]))
    gw1.write_timings(Timings({"kernel_s": 3.0}, [Boot(1, 2.5), Boot(2, 2.6)]))
    assert controller.run_dir_used()
    assert Timings.merge(controller.read_timings()) == Timings(
        {"kernel_s": 3.0}, [Boot(1, 2.0, worker="gw0"), Boot(1, 2.5, worker="gw1"), Boot(2, 2.6, worker="gw1")])


def test_stopping_the_workers_signals_each_one_and_only_ours(tmp_path: Path):
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    # Not our child (a worker's pid, reused since that worker ended): left alone.
    stranger = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    assert stranger.stdout
    grandchild = int(stranger.stdout.readline())
    try:
        for n, proc in enumerate(sleepers):
            (tmp_path / f"gw{n}.pid").write_text(str(proc.pid))
        (tmp_path / "gw5.pid").write_text(str(grandchild))
        (tmp_path / "gw7.pid").write_text("999999999")  # a worker that is gone: no error
        Control(tmp_path).stop_workers()
        assert [proc.wait(timeout=10) for proc in sleepers] == [-signal.SIGTERM, -signal.SIGTERM]
        os.kill(grandchild, 0)  # still there
    finally:
        for proc in sleepers:
            proc.kill()
        os.kill(grandchild, signal.SIGKILL)
        stranger.wait()
