"""Faults only a debug kernel reports. Run by tests/test_faults.py through `harness run
--fragment debug/kasan --guest-modules=fault_inject`; each test's expect_outcome marker names its outcome."""

from __future__ import annotations

import pytest

from tests.fault_suite.faults import inject


@pytest.mark.expect_outcome("PASS")
def test_kernel_has_kasan(guest):
    """The booted kernel is the KASAN build (without it, the fault below is silent)."""
    config = guest.run(["sh", "-c", "zcat /proc/config.gz | grep -x CONFIG_KASAN=y"])
    assert config.ok, "this file needs a KASAN kernel: --fragment debug/kasan"


@pytest.mark.expect_outcome("FAIL")
def test_use_after_free(guest):
    """A use-after-free read, reported by KASAN, in an otherwise passing test."""
    assert inject(guest, "use_after_free").ok


@pytest.mark.expect_outcome("PASS")
@pytest.mark.allow_splats(r"^KASAN: slab-use-after-free Read in use_after_free_write$")
def test_use_after_free_allowed(guest):
    """The same report, allow-listed by title."""
    assert inject(guest, "use_after_free").ok
