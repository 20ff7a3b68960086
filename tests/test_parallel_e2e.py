"""`harness run -j 2` with real guests: the fault suite's planted faults (warn, oops, hangs, watchdogs,
a killed sshd, a killed QEMU, a panic) on two workers end each in its outcome, once, with its logs;
timings.json has every worker's boots; stopping the controller stops every worker's VMs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import paths
from harness.kernel.prepare import prepare
from harness.results.model import Timings
from tests.fault_outcomes import expected_outcomes
from tests.test_boot_faults import qemu_pids
from tests.test_faults import FAULT_SUITE, run_fault_suite

pytestmark = pytest.mark.e2e


def test_faults_on_two_workers_are_each_reported_once_with_their_logs(tmp_path: Path):
    results, _ = run_fault_suite(tmp_path, FAULT_SUITE, "-j", "2")  # every outcome as expected, no QEMU left
    expected = expected_outcomes(FAULT_SUITE)
    listed = [r["test"] for r in json.loads((tmp_path / "outcomes.json").read_text())]
    assert sorted(listed) == sorted(expected), "every test once in outcomes.json"
    # JUnit, written by the controller: every case once, with the outcome outcomes.json gives it.
    cases: dict[str, list[str]] = {}
    for case in ET.parse(tmp_path / "junit.xml").iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        cases.setdefault(name, []).extend(p.get("value", "") for p in case.iter("property")
                                          if p.get("name") == "outcome")
    assert cases == {test: [outcome] for test, outcome in expected.items()}, cases
    # Both workers booted guests (a crash, a kill and a panic each cost one), each into its own folder,
    # and each boot is in timings.json under its worker.
    boots = Timings.read(tmp_path / "timings.json").boots
    assert {b.worker for b in boots} == {"gw0", "gw1"}, boots
    for b in boots:
        assert b.boot_to_ssh_s and (tmp_path / f"vm-{b.worker}-{b.vm}" / "console.log").stat().st_size > 0, b
    # A failing test's console log is its own worker's VM's.
    for name in ("test_oops", "test_panic", "test_qemu_killed"):
        log = Path(results[name]["console_log"])
        assert log.parent.parent == tmp_path and log.parent.name.startswith(("vm-gw0-", "vm-gw1-")), log
    panicked = Path(results["test_panic"]["console_log"]).read_text()
    assert "Kernel panic - not syncing: fault_inject: panic on request" in panicked


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
