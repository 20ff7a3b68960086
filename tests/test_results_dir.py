"""Where results go: a results directory that cannot take files is a clear error before anything
is built or booted; a disk that fills up during a run stops it with a clear error, and leaves no
truncated report that could be taken for a good one. Real file systems: small tmpfs mounts (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
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
