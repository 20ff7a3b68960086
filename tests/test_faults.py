"""The fault-injection suite: real faults in real guests end in the right outcome, in time, with logs,
and leave nothing behind. See tests/fault_suite/test_inject.py for the faults themselves."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import paths, pipeline
from harness.machine import VM, load_profile
from tests.test_boot_faults import qemu_pids

pytestmark = pytest.mark.e2e
FAULT_SUITE = paths.REPO / "tests/fault_suite/test_inject.py"


def expected_outcomes() -> dict[str, str]:
    """Each fault test's docstring starts with the outcome it must end in."""
    tree = ast.parse(FAULT_SUITE.read_text())
    return {f"tests/fault_suite/test_inject.py::{fn.name}": ast.get_docstring(fn).split(":")[0]
            for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")}


def test_every_fault_ends_in_its_outcome(tmp_path: Path):
    before = qemu_pids()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", f"--results-dir={tmp_path}",
                           "--guest-modules=fault_inject", str(FAULT_SUITE)],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    assert not qemu_pids() - before, "QEMU left behind"
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # some tests failed, on purpose
    results = {r["test"]: r for r in json.loads((tmp_path / "outcomes.json").read_text())}
    seen = {test: r["outcome"] for test, r in results.items()}
    assert seen == expected_outcomes(), json.dumps(results, indent=1)
    for r in results.values():
        assert r["console_log"] and Path(r["console_log"]).exists(), r
        if r["outcome"] != "PASS":
            assert r["reason"], r
    reason = {t.split("::")[1]: r["reason"] for t, r in results.items()}
    assert reason["test_warn"].startswith("kernel splat(s) during the test: WARNING in warn_write")
    assert "BUG: kernel NULL pointer dereference" in reason["test_oops"]
    assert "did not finish within 5 s" in reason["test_command_hangs"]
    assert "15 s watchdog" in reason["test_watchdog"]
    assert reason["test_qemu_killed"].startswith("QEMU died")
    assert reason["test_panic"] == "kernel crashed: kernel panic: fault_inject: panic on request"
    # The watchdog fired at 15 s and the hung command at 5 s: nothing waited on a default timeout.
    assert elapsed < 300, f"fault suite took {elapsed:.0f} s"


def _boot_and_ask(vm: VM, answers: dict[int, str]) -> None:
    vm.start(boot_timeout=240)
    assert vm.ssh
    answers[vm.ssh_port] = vm.ssh.run(["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()


def test_four_vms_in_parallel(tmp_path: Path):
    prepared = pipeline.prepare()
    before = qemu_pids()
    vms = [VM(load_profile("default"), prepared.build.bzimage, prepared.image, tmp_path / f"vm-{i}")
           for i in range(4)]
    answers: dict[int, str] = {}
    threads = [threading.Thread(target=_boot_and_ask, args=(vm, answers)) for vm in vms]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for vm in vms:
            vm.stop()
    assert len(answers) == 4, f"only {len(answers)} of 4 parallel guests answered: {answers}"
    assert len(set(answers.values())) == 4, "four guests, four boot ids"
    assert not qemu_pids() - before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killing_the_harness_leaves_no_qemu(tmp_path: Path, sig: signal.Signals):
    before = qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", f"--results-dir={tmp_path}",
                             "--guest-modules=fault_inject", "-k", "test_watchdog", str(FAULT_SUITE)],
                            cwd=paths.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not qemu_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids() - before, "the harness never started QEMU"
    time.sleep(3)  # well into boot or the test
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while qemu_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not qemu_pids() - before, f"QEMU outlived the harness after {sig.name}"
