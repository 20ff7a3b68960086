"""`harness run -j 2` with real guests: stopping the controller stops every worker's VMs, and the workers'
timings survive it. The fault suite's planted faults on two workers (each in its outcome, once, with its
logs; timings.json has every worker's boots) are tests/test_faults.py's one run of that suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import paths
from harness.kernel.prepare import prepare
from harness.results.model import Timings
from tests.test_boot_faults import qemu_pids
from tests.test_faults import FAULT_SUITE

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_controller_stops_every_workers_vms(tmp_path: Path, sig: signal.Signals):
    prepare()  # built and cached before the clock starts
    before = qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "-j", "2", f"--results-dir={tmp_path}",
                             "--guest-modules=fault_inject", "-k", "test_watchdog or test_spin_in_kernel",
                             str(FAULT_SUITE)],
                            cwd=paths.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 180
    while len(guests(qemu_pids() - before)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(guests(qemu_pids() - before)) == 2, "the two workers never both started a guest"
    time.sleep(3)  # well into boot or the tests
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while qemu_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not qemu_pids() - before, f"a worker's QEMU outlived the controller after {sig.name}"
    if sig != signal.SIGKILL:  # the controller lived to write what it had: the tests that ended (their
        # watchdogs fire at 15 and 20 s: on a loaded host one may end before the signal), and the boots
        ended = json.loads((tmp_path / "outcomes.json").read_text())
        assert all(r["outcome"] == "TIMEOUT" for r in ended), ended
        # Written by the workers' teardowns after the signal (their guests may still have been booting,
        # and a boot that did not finish has no record, as without workers): the kernel they prepared.
        assert Timings.read(tmp_path / "timings.json").prepare, "the workers' timings were lost"


def guests(pids: set[int]) -> set[int]:
    """The QEMUs that boot a kernel (not `qemu -device help`, which the harness runs to check a profile)."""
    found = set()
    for pid in pids:
        try:
            if b"-kernel" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.add(pid)
        except OSError:
            pass
    return found
