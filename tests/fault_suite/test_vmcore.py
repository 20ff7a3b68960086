"""A planted panic and a planted hang on a dumpable kernel (`--fragment debug/dump`), each in a process whose mm
has an mmu_interval_notifier: the shell opens /dev/hmm_dmirror0 first (lib/test_hmm.c:dmirror_fops_open inserts
one over the whole address space), so the vmcore's analysis has a subscription to list
(tests/test_vmcore_e2e.py reads it)."""

from __future__ import annotations

import pytest

from tests.fault_suite.faults import INJECT

MIRRORED = "modprobe test_hmm; exec 3<>/dev/hmm_dmirror0 && "  # then this shell's mm has test_hmm's notifier


@pytest.mark.expect_outcome("CRASH")
def test_panic_in_a_mirrored_process(guest):
    """panic() under a write from a process with a notifier: the dump shows panic_write on its stack."""
    guest.run(["sh", "-c", f"{MIRRORED}echo 1 > {INJECT}/panic"], timeout=60)


@pytest.mark.expect_outcome("TIMEOUT")
@pytest.mark.test_timeout(20)
def test_hang_in_a_mirrored_process(guest):
    """An uninterruptible sleep (hang_write) past the test's watchdog: the dump shows the task in D state."""
    guest.run(["sh", "-c", f"{MIRRORED}echo 3600 > {INJECT}/hang"], timeout=600)
