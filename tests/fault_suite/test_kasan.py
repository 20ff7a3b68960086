"""Faults only a debug kernel reports. Run by tests/test_faults.py through `harness run
--fragment debug/kasan --guest-modules=fault_inject`; each test's docstring names its outcome."""

from __future__ import annotations

import pytest

from tests.fault_suite.faults import inject


def test_kernel_has_kasan(guest):
    """PASS: the booted kernel is the KASAN build (without it, the fault below is silent)."""
    config = guest.run(["sh", "-c", "zcat /proc/config.gz | grep -x CONFIG_KASAN=y"])
    assert config.ok, "this file needs a KASAN kernel: --fragment debug/kasan"


def test_use_after_free(guest):
    """FAIL: a use-after-free read, reported by KASAN, in an otherwise passing test."""
    assert inject(guest, "use_after_free").ok


@pytest.mark.allow_splats(r"^KASAN: slab-use-after-free Read in use_after_free_write$")
def test_use_after_free_allowed(guest):
    """PASS: the same report, allow-listed by title."""
    assert inject(guest, "use_after_free").ok
