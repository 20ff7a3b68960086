"""Where results go: a results directory that cannot take files is a clear error before anything
is built or booted; a disk that fills up during a run stops it with a clear error, and leaves no
truncated report that could be taken for a good one. Real file systems: small tmpfs mounts (root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
from harness.results import rundir
from tests.test_boot_faults import qemu_pids


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[callable]:
    """mount(size, *options) -> a fresh tmpfs of that size; unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", *options)), "tmpfs", str(point)],
                       check=True, capture_output=True)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


def harness_run(results: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", f"--results-dir={results}", *args],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_refused(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("harness: results directory ") and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_results_dir_under_a_file(tmp_path: Path):
    (tmp_path / "file").write_text("")
    assert_refused(harness_run(tmp_path / "file/run"), "is not a directory")


def test_read_only_results_dir(small_fs):
    ro = small_fs("1m", "ro")
    proc = harness_run(ro / "run")
    assert_refused(proc, "read-only file system")
    assert not any(ro.iterdir())


def test_full_results_dir(small_fs):
    full = small_fs("64k")
    proc = harness_run(full / "run")
    assert_refused(proc, "MiB free; a run needs at least 20 MiB")
    assert not any(full.iterdir())


@pytest.mark.e2e
def test_disk_full_during_a_run(small_fs):
    """The disk fills while the guest boots: the run stops at that test with a clear error, QEMU goes,
    and outcomes.json and junit.xml are either whole or absent."""
    fs = small_fs("24m")
    run = fs / "run"

    def fill_when_booting() -> None:
        deadline = time.monotonic() + 300
        while not (run / "vm-1/console.log").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            with open(fs / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass  # full

    filler = threading.Thread(target=fill_when_booting, daemon=True)
    filler.start()
    before = qemu_pids()
    proc = harness_run(run, "--guest-modules=fault_inject", str(paths.REPO / "tests/fault_suite/test_inject.py"),
                       "-k", "test_warn_allowed or test_guest_works_after_all_that")
    filler.join(timeout=10)
    out = proc.stdout + proc.stderr
    assert not qemu_pids() - before, "QEMU left behind"
    assert proc.returncode != 0, out
    assert "No space left on device" in out, out
    assert "results can no longer be written" in out, out  # the run stopped at the first test
    assert "Traceback" not in proc.stderr, proc.stderr
    for name in ("outcomes.json", "junit.xml"):  # whole, or not there
        path = run / name
        if path.exists():
            (json.loads if name.endswith(".json") else ET.fromstring)(path.read_text())
    assert not [p.name for p in run.glob(".*") if p.is_file()], "temporary files left behind"


# --- one directory per run, however many start at once ---------------------------------------------

CLAIM = """\
import os, sys, time
from pathlib import Path
import harness.results.rundir as rundir
rundir.time.strftime = lambda fmt: "20260101-000000"  # every process in the same second
go = Path(sys.argv[1])
while not go.exists():  # a start line: all claim at once
    time.sleep(0.001)
path = rundir.new_run_dir()
with open(path / "harness.log", "x") as f:  # "x": fails if another run's log is already there
    f.write(f"{os.getpid()}\\n")
print(path)
"""


def test_runs_started_at_once_each_get_their_own_directory(tmp_path: Path):
    n = 24
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "HARNESS_RESULTS": str(tmp_path / "results")})
             for _ in range(n)]
    time.sleep(2)  # let them all reach the start line (a late one only makes the race easier)
    go.touch()
    claimed = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed.append((proc.pid, Path(out.strip())))
    dirs = [p for _, p in claimed]
    assert len(set(dirs)) == n, "two runs shared a directory"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(p.name for p in dirs)
    assert {p.name for p in dirs} == {"20260101-000000", *(f"20260101-000000-{k}" for k in range(2, n + 1))}
    for pid, path in claimed:  # each log is its writer's, whole: none overwritten
        assert (path / "harness.log").read_text() == f"{pid}\n"
    assert sorted(dirs, key=lambda p: rundir.run_order(p.name))[-1].name == f"20260101-000000-{n}"


RUN_DIR_SUITE = '''\
import os
import time

import harness.results.rundir as rundir


def test_writes_its_log(run_dir):
    (run_dir.root / "harness.log").write_text(f"{os.getpid()} {os.environ.get('PYTEST_XDIST_WORKER', '')}\\n")
    time.sleep(1)  # the other sessions run meanwhile


def test_uses_no_run_dir():
    pass
'''
FROZEN_CONFTEST = '''\
import types

import harness.results.rundir as rundir

rundir.time = types.SimpleNamespace(strftime=lambda fmt: "20260101-000000")  # every session in one second
'''


def test_pytest_sessions_started_at_once_each_get_their_own_run_dir(tmp_path: Path):
    """Three sessions that name no results directory, in the same second (one under two xdist workers), and a
    fourth under xdist that uses no run_dir: three directories, each with its own session's log, and no
    directory left by the fourth."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(FROZEN_CONFTEST)
    (suite / "test_suite.py").write_text(RUN_DIR_SUITE)
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this session's xdist worker's
    sessions = [["-k", "writes"], ["-k", "writes"], ["-k", "writes", "-n", "2"], ["-k", "no_run_dir", "-n", "2"]]
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={suite}",
                               *args], cwd=suite, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**env, "HARNESS_RESULTS": str(results)}) for args in sessions]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(outputs)
    runs = sorted(p for p in results.iterdir() if not p.is_symlink())
    # three, named in that second (the fourth's, claimed for its workers and left unused, is gone)
    assert len(runs) == 3 and all(re.fullmatch(r"20260101-000000(-\d+)?", p.name) for p in runs), runs
    logs = [(run / "harness.log").read_text().split() for run in runs]
    assert len({pid for pid, *_ in logs}) == 3, logs  # three writers, none overwritten
    assert sorted(len(log) for log in logs) == [1, 1, 2], logs  # one of them an xdist worker's
    assert (results / "latest").resolve() in runs
