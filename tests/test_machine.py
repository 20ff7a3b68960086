from pathlib import Path

import pytest

from harness import machine
from harness.machine import MachineError, Profile, load_profile, qemu_argv


def test_default_profile_loads():
    p = load_profile("default")
    assert p.cpus >= 1 and p.memory_mib >= 256
    assert any(a.startswith("console=ttyS0") for a in p.append)


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(MachineError, match=r"unknown machine profile 'nope'.*default"):
        load_profile("nope")


def test_malformed_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines/bad.yaml").write_text("cpus: [1\n")
    (tmp_path / "machines/typo.yaml").write_text("cpuz: 2\n")
    monkeypatch.setattr(machine.paths, "CONFIGS", tmp_path)
    with pytest.raises(MachineError, match="not valid YAML"):
        load_profile("bad")
    with pytest.raises(MachineError, match=r"unknown key\(s\) \['cpuz'\]"):
        load_profile("typo")


def test_argv_forwards_ssh_on_loopback_only_and_never_reboots():
    p = Profile("t", "", devices=("virtio-gpu-pci",), append=("console=ttyS0",))
    argv = qemu_argv(p, Path("/k/bzImage"), Path("/i.cpio.gz"), 40022, "tcg", ("harness.modules=mmu_probe",))
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "-no-reboot" in argv
    assert argv[argv.index("-append") + 1] == "console=ttyS0 harness.modules=mmu_probe"
    assert argv[-2:] == ["-device", "virtio-gpu-pci"]
    assert argv[argv.index("-machine") + 1] == "pc,accel=tcg"


def test_ready_marker_needs_the_whole_line():
    import re

    # Through the pty, the guest's \r\n arrives as \r\r\n; a line still printing must not match.
    assert re.search(machine.READY_RE, "boot\r\r\nHARNESS-READY 6.12.117\r\r\n", re.M)[1] == "6.12.117"
    assert re.search(machine.READY_RE, "boot\r\r\nHARNESS-READY 6.1", re.M) is None
