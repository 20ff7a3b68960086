"""Real driver workloads with a fault planted during them. Run by tests/test_driver_faults.py through
`harness driver test_hmm --suite THIS --guest-modules=fault_inject`, which checks that each test ends in
the outcome its expect_outcome marker names: a WARN in the kernel log while a driver test runs fails that test,
even when the driver's own verdict was a pass, and the next test gets a fresh guest."""

from __future__ import annotations

import pytest

from harness.checks import drivers
from harness.kernel import userprogs

WARN = "/sys/kernel/debug/fault_inject/warn"
HMM = drivers.load_driver("test_hmm")


def plant_warn(guest) -> None:
    """A WARN_ON from another process while the workload runs (fault_inject's warn_write)."""
    guest.run(["sh", "-c", f"(sleep 0.2; echo 1 > {WARN}) >/dev/null 2>&1 &"], check=True)


def hmm_selftest(guest, kernel, name: str) -> None:
    drivers.load_module(guest.ssh, HMM)
    binary = drivers.install(guest.ssh, userprogs.hmm_tests(kernel.build))
    result, output = drivers.run_kselftest(guest.ssh, binary, name, timeout=120)
    drivers.verdict(result, output, name, None)


@pytest.mark.expect_outcome("FAIL")
@pytest.mark.needs_notifier
def test_hmm_selftest_with_warn(guest, kernel):
    """hmm-tests' anon_read passes, but a WARN hit the kernel while it ran."""
    plant_warn(guest)
    hmm_selftest(guest, kernel, "hmm.hmm_device_private.anon_read")
    guest.run(["sleep", "1"])  # the WARN lands within the test


@pytest.mark.expect_outcome("PASS")
@pytest.mark.needs_notifier
def test_hmm_selftest_clean(guest, kernel):
    """The same kernel test on the fresh guest that replaced the warned one."""
    hmm_selftest(guest, kernel, "hmm.hmm_device_private.anon_read")


@pytest.mark.expect_outcome("FAIL")
@pytest.mark.needs_notifier
@pytest.mark.machine("kvm")
def test_kvm_memslot_with_warn(guest):
    """A KVM guest runs and is torn down correctly, with a WARN during it."""
    plant_warn(guest)
    _, info = guest.program("kvm_memslot", "--no-probe")
    assert info["written"] == 14
    guest.run(["sleep", "1"])


@pytest.mark.expect_outcome("FAIL")
@pytest.mark.machine("virtio-gpu")
def test_drm_buffers_with_warn(guest, kernel):
    """virtio-gpu buffers mapped and destroyed, with a WARN during it."""
    plant_warn(guest)
    program = drivers.install(guest.ssh, userprogs.kprogram(kernel.build, "drm_buffers"))
    _, info = guest.program(program.rsplit("/", 1)[1], "dumb", "--no-probe")
    assert info["pattern_ok"] == 1
    guest.run(["sleep", "1"])


@pytest.mark.expect_outcome("PASS")
@pytest.mark.machine("virtio-gpu")
def test_drm_buffers_clean(guest, kernel):
    """The same workload on a fresh guest."""
    program = drivers.install(guest.ssh, userprogs.kprogram(kernel.build, "drm_buffers"))
    _, info = guest.program(program.rsplit("/", 1)[1], "dumb", "--no-probe")
    assert info["pattern_ok"] == 1
