"""The fault-injection suite: real faults in real guests end in the right outcome, in time, with logs,
and leave nothing behind. See tests/fault_suite/test_inject.py for the faults themselves.

The suite runs once, on two workers (`harness run -j 2`), and the tests below read that one run: each
fault's outcome and reason, a timeout's post-mortem, and what two workers add (each test reported once,
JUnit by the controller, every worker's boots and console logs). The path without workers is the same
plugin in one process; `harness driver` on tests/driver_fault_suite/ (tests/test_driver_faults.py) and
the kill tests below run it that way."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import paths
from harness.kernel.prepare import prepare
from harness.results.model import Timings
from harness.vm.machine import VM, load_profile
from tests.fault_outcomes import expected_outcomes
from tests.test_boot_faults import qemu_pids

pytestmark = pytest.mark.e2e
FAULT_SUITE = paths.REPO / "tests/fault_suite/test_inject.py"
KASAN_SUITE = paths.REPO / "tests/fault_suite/test_kasan.py"


def listening_guest_ports(run_dir: Path) -> list[int]:
    """The forwarded SSH ports of the run's VMs (from each vm-N/qemu-argv.json) that still accept."""
    ports = [int(m[1]) for argv in run_dir.rglob("qemu-argv.json")
             if (m := re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-", " ".join(json.loads(argv.read_text()))))]
    assert ports, f"no qemu-argv.json under {run_dir}"
    open_ports = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                open_ports.append(port)
    return open_ports


def run_fault_suite(tmp_path: Path, suite: Path, *options: str) -> tuple[dict[str, dict], float]:
    """`harness run` the suite; every test must end in its expect_outcome marker's outcome, with its logs and
    no QEMU left behind. Returns the results by test name, and the wall time."""
    expected = expected_outcomes(suite)
    before = qemu_pids()
    started = time.monotonic()
    # --reruns=0: what is checked is how each fault is classified where it happens; a rerun would repeat it
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", f"--results-dir={tmp_path}",
                           "--guest-modules=fault_inject", "--reruns=0", *options, str(suite)],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    assert not qemu_pids() - before, "QEMU left behind"
    assert not listening_guest_ports(tmp_path), "a guest's forwarded SSH port is still open"
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # some tests failed, on purpose
    results = {r["test"]: r for r in json.loads((tmp_path / "outcomes.json").read_text())}
    seen = {test: r["outcome"] for test, r in results.items()}
    assert seen == expected, json.dumps(results, indent=1)
    for r in results.values():
        assert r["console_log"] and Path(r["console_log"]).exists(), r
        if r["outcome"] != "PASS":
            assert r["reason"], r
    return {t.split("::")[1]: r for t, r in results.items()}, elapsed


@dataclass(frozen=True)
class FaultRun:
    """The one run of the fault suite the tests of this module read."""

    dir: Path
    results: dict[str, dict]  # by test function name
    elapsed: float


# The tests that read the run go to one pytest-xdist worker together (make test), which makes it once.
ONE_RUN = pytest.mark.xdist_group("fault-suite-run")


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    run_dir = tmp_path_factory.mktemp("fault-suite")
    results, elapsed = run_fault_suite(run_dir, FAULT_SUITE, "-j", "2")
    return FaultRun(run_dir, results, elapsed)


@ONE_RUN
def test_every_fault_ends_in_its_outcome(fault_run: FaultRun):
    results, elapsed = fault_run.results, fault_run.elapsed
    reason = {name: r["reason"] for name, r in results.items()}
    assert reason["test_warn"].startswith("kernel splat(s) during the test: WARNING in warn_write")
    assert "BUG: kernel NULL pointer dereference" in reason["test_oops"]
    assert "did not finish within 5 s" in reason["test_command_hangs"]
    assert "15 s watchdog" in reason["test_watchdog"]
    assert "20 s watchdog" in reason["test_spin_in_kernel"]
    assert reason["test_qemu_killed"].startswith("QEMU died")
    assert reason["test_panic"] == "kernel crashed: kernel panic: fault_inject: panic on request"
    # The watchdog fired at 15 and 20 s, the hung command at 5 s: nothing waited on a default timeout.
    assert elapsed < 360, f"fault suite took {elapsed:.0f} s"


@ONE_RUN
def test_a_timeout_keeps_a_post_mortem(fault_run: FaultRun):
    """Before QEMU is stopped: dmesg while SSH answers, and over QMP every CPU's registers, named."""
    results = fault_run.results
    hung = results["test_command_hangs"]["extra"]["post_mortem"]
    assert Path(hung["dmesg"]).exists(), hung  # the other sessions still answer: only one command sleeps
    registers = Path(hung["registers"]).read_text()
    # The test's own post-mortem.json says the same as outcomes.json, dmesg included.
    assert json.loads((Path(hung["registers"]).parent / "post-mortem.json").read_text()) == hung
    assert "CPU#0" in registers and "RIP=" in registers, hung
    # Where the CPU was, most often first over five looks: the hung command sleeps uninterruptibly,
    # nothing runs, the CPU idles.
    assert hung["CPU#0"].startswith("default_idle "), hung
    spun = results["test_spin_in_kernel"]["extra"]["post_mortem"]
    # Spinning with mdelay() in a loop, the CPU that ran the write is in the kernel's delay code
    # (arch/x86/lib/delay.c) nearly all the time. Which CPU that is, the scheduler decides; the guest has
    # two (configs/machines/default.yaml) and the other one still serves SSH, so dmesg is captured.
    cpus = {name: where for name, where in spun.items() if name.startswith("CPU#")}
    assert sorted(cpus) == ["CPU#0", "CPU#1"] and any(w.startswith("delay_") for w in cpus.values()), spun
    assert Path(spun["dmesg"]).exists(), spun
    # The default machine has no display: QMP says so instead of a picture.
    assert spun["screen"].startswith("not captured"), spun


@ONE_RUN
def test_faults_on_two_workers_are_each_reported_once_with_their_logs(fault_run: FaultRun):
    run_dir, results = fault_run.dir, fault_run.results  # every outcome as expected, no QEMU left (fault_run)
    expected = expected_outcomes(FAULT_SUITE)
    listed = [r["test"] for r in json.loads((run_dir / "outcomes.json").read_text())]
    assert sorted(listed) == sorted(expected), "every test once in outcomes.json"
    # JUnit, written by the controller: every case once, with the outcome outcomes.json gives it.
    cases: dict[str, list[str]] = {}
    for case in ET.parse(run_dir / "junit.xml").iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        cases.setdefault(name, []).extend(p.get("value", "") for p in case.iter("property")
                                          if p.get("name") == "outcome")
    assert cases == {test: [outcome] for test, outcome in expected.items()}, cases
    # Both workers booted guests (a crash, a kill and a panic each cost one), each into its own folder,
    # and each boot is in timings.json under its worker.
    boots = Timings.read(run_dir / "timings.json").boots
    assert {b.worker for b in boots} == {"gw0", "gw1"}, boots
    for b in boots:
        assert b.boot_to_ssh_s and (run_dir / f"vm-{b.worker}-{b.vm}" / "console.log").stat().st_size > 0, b
    # A failing test's console log is its own worker's VM's.
    for name in ("test_oops", "test_panic", "test_qemu_killed"):
        log = Path(results[name]["console_log"])
        assert log.parent.parent == run_dir and log.parent.name.startswith(("vm-gw0-", "vm-gw1-")), log
    panicked = Path(results["test_panic"]["console_log"]).read_text()
    assert "Kernel panic - not syncing: fault_inject: panic on request" in panicked


@pytest.mark.debug_kernel
def test_a_kasan_report_fails_an_otherwise_passing_test(tmp_path: Path):
    """The debug kernel (configs/fragments/debug/kasan.config): its report fails the test that made
    it, unless allow-listed; its timeouts are scaled for a debug kernel."""
    results, _ = run_fault_suite(tmp_path, KASAN_SUITE, "--fragment=debug/kasan")
    assert results["test_use_after_free"]["reason"].startswith(
        "kernel splat(s) during the test: KASAN: slab-use-after-free Read in use_after_free_write"), results
    boots = json.loads((tmp_path / "timings.json").read_text())["boots"]
    assert {b["boot_timeout_s"] for b in boots} == {120.0 * 3}, boots  # harness/vm/pool.py timeout_scale


def _boot_and_ask(vm: VM, answers: dict[int, str]) -> None:
    vm.start(boot_timeout=240)
    assert vm.ssh
    answers[vm.ssh_port] = vm.ssh.run(["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()


def test_four_vms_in_parallel(tmp_path: Path):
    prepared = prepare()
    before = qemu_pids()
    vms = [VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path / f"vm-{i}")
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
    # Built and cached before the clock starts: a kernel build (or another process holding the tree's
    # lock while it builds) must not eat the time the harness has to start QEMU. 300 s: under make test's
    # three workers the run may still wait on another worker's lock of the shared cache (a compare's
    # patched build); seen once at 120 s. The wait ends as soon as QEMU starts.
    prepare()
    before = qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", f"--results-dir={tmp_path}",
                             "--guest-modules=fault_inject", "-k", "test_watchdog", str(FAULT_SUITE)],
                            cwd=paths.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
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
