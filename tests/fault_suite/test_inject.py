"""Faults done to a real guest on purpose. Run by tests/test_faults.py through `harness run
--guest-modules=fault_inject`, which then checks that each test ended in the outcome its
expect_outcome marker names. Order matters: each fault must leave the next test a working guest."""

from __future__ import annotations

import os
import signal

import pytest

from tests.fault_suite.faults import inject


@pytest.mark.expect_outcome("FAIL")
def test_warn(guest):
    """A WARN_ON in an otherwise passing test."""
    assert inject(guest, "warn").ok


@pytest.mark.expect_outcome("PASS")
@pytest.mark.allow_splats(r"^WARNING in warn_write$")
def test_warn_allowed(guest):
    """The same WARN, allow-listed by title."""
    assert inject(guest, "warn").ok


@pytest.mark.expect_outcome("CRASH")
def test_oops(guest):
    """A NULL dereference oopses; the writer dies, the kernel goes on."""
    inject(guest, "oops")


@pytest.mark.expect_outcome("TIMEOUT")
def test_command_hangs(guest):
    """A command blocked in the kernel outlives its per-command timeout."""
    inject(guest, "hang", "600", timeout=5)


@pytest.mark.expect_outcome("TIMEOUT")
@pytest.mark.test_timeout(15)
def test_watchdog(guest):
    """The test's own watchdog stops QEMU when the test outlives it."""
    guest.run(["sleep", "600"], timeout=900)


@pytest.mark.expect_outcome("TIMEOUT")
@pytest.mark.test_timeout(20)
def test_spin_in_kernel(guest):
    """A command spinning in the kernel wedges the one CPU; the watchdog's post-mortem names where."""
    inject(guest, "spin", "600", timeout=900)


@pytest.mark.expect_outcome("INFRA")
def test_sshd_killed(guest):
    """dropbear killed in the middle of a command on an SSH channel; no session can be had again. (A command on
    the virtio-serial port, which the session tries first, would not notice: tests/test_snapshot_e2e.py.)"""
    guest.ssh.run(["sh", "-c", "killall dropbear; sleep 5"], timeout=30, own_channel=True)
    guest.ssh.run(["true"], own_channel=True)


@pytest.mark.expect_outcome("CRASH")
def test_qemu_killed(guest):
    """QEMU killed with SIGKILL under the test."""
    os.kill(guest.vm.console.pid, signal.SIGKILL)
    guest.run(["true"], timeout=10)


@pytest.mark.expect_outcome("CRASH")
def test_panic(guest):
    """A panic during a test."""
    inject(guest, "panic", timeout=20)


@pytest.mark.expect_outcome("PASS")
def test_guest_works_after_all_that(guest):
    """A fresh guest answers."""
    assert guest.run(["uname", "-r"]).ok
