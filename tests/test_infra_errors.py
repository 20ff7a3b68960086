"""The raise sites that say "the machine failed, not your input" (harness/errors.py InfraError, exit 75): a
failing apt-get, a build that ran out of disk, a missing QEMU; and what stays bad input. Real commands, no mocks
of what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import InfraError, UserError
from harness.kernel import debian
from harness.kernel.build import BuildError, DiskFull, run_logged
from harness.vm import machine


def test_a_failing_apt_step_is_infrastructure():
    with pytest.raises(debian.AptFailed, match=r"apt-get update of x failed \(exit 100\)") as e:
        debian._apt(["sh", "-c", "echo 'E: Could not resolve deb.debian.org' >&2; exit 100"], "apt-get update of x")
    assert isinstance(e.value, InfraError) and not isinstance(e.value, UserError)
    assert "Could not resolve" in str(e.value)


def test_a_build_that_ran_out_of_disk_is_infrastructure(tmp_path: Path):
    full = ["sh", "-c", "echo 'mm/rmap.o: fatal error: error writing to /tmp/cc.s: No space left on device'; exit 2"]
    with pytest.raises(DiskFull, match="the disk is full") as e:
        run_logged(full, tmp_path / "build.log", "make")
    assert isinstance(e.value, InfraError)


def test_a_build_that_fails_to_compile_is_still_the_trees(tmp_path: Path):
    broken = ["sh", "-c", "echo 'mm/rmap.c:1:1: error: expected identifier'; exit 2"]
    with pytest.raises(BuildError, match=r"make failed \(exit 2\)") as e:
        run_logged(broken, tmp_path / "build.log", "make")
    assert isinstance(e.value, UserError) and not isinstance(e.value, InfraError)


def test_a_missing_qemu_is_infrastructure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without qemu-system-x86_64
    with pytest.raises(machine.QemuMissing, match="apt-get install qemu-system-x86") as e:
        machine.qemu_binary()
    assert isinstance(e.value, InfraError)
