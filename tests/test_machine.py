import re
from pathlib import Path

import pytest

from harness import paths
from harness.vm import machine
from harness.vm.machine import MachineError, Profile, load_profile, qemu_argv


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
    assert argv[argv.index("-machine") + 1] == "pc"
    # "-machine pc,accel=" and "-accel" together are refused by QEMU: the accelerator is named once
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi" and not any("accel=" in a for a in argv)
    kvm = qemu_argv(p, Path("/k/bzImage"), Path("/i.cpio.gz"), 40022, "kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_ready_marker_needs_the_whole_line():
    # Through the pty, the guest's \r\n arrives as \r\r\n; a line still printing must not match.
    assert re.search(machine.READY_RE, "boot\r\r\nHARNESS-READY 6.12.117\r\r\n", re.M)[1] == "6.12.117"
    assert re.search(machine.READY_RE, "boot\r\r\nHARNESS-READY 6.1", re.M) is None


def test_qemu_opens_no_door_of_its_own():
    """QMP is an inherited socketpair end (no name, no listener); SSH is forwarded on loopback only;
    the human monitor is off. tests/test_exposure.py checks the running QEMU as an attacker would."""
    argv = qemu_argv(Profile("t", ""), Path("/k"), Path("/i"), 40022, "tcg", qmp_fd=7)
    assert argv[argv.index("-chardev") + 1] == "socket,id=qmp,fd=7"
    assert argv[argv.index("-mon") + 1] == "chardev=qmp,mode=control"
    assert argv[argv.index("-monitor") + 1] == "none"
    # restrict=on: the guest reaches neither the host's services nor the network (tests/test_guest_network.py)
    assert argv[argv.index("-netdev") + 1] == "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"
    joined = " ".join(argv)
    assert "abstract" not in joined and "path=" not in joined and "server" not in joined


def test_profile_for_another_architecture_is_refused(tmp_path: Path):
    profile = tmp_path / "arm.yaml"
    profile.write_text("arch: aarch64\nmachine: virt\n")
    with pytest.raises(MachineError, match=r"asks for arch 'aarch64'; the harness builds and boots arm64, x86_64"):
        load_profile(str(profile))
    profile.write_text("arch: arm64\nmachine: virt\n")
    with pytest.raises(MachineError, match=r"is an arm64 machine, not an x86_64 one"):
        load_profile(str(profile))
    assert load_profile(str(profile), "arm64").machine == "virt"
    with pytest.raises(MachineError, match=r"default.yaml' is an x86_64 machine, not an arm64 one"):
        load_profile(str(paths.CONFIGS / "machines" / "default.yaml"), "arm64")


def test_profile_by_path(tmp_path: Path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("description: mine\ncpus: 1\n")
    assert load_profile(str(profile)).cpus == 1
    with pytest.raises(MachineError, match=r"machine profile file .*gone.yaml does not exist"):
        load_profile(str(tmp_path / "gone.yaml"))


def test_a_device_this_qemu_lacks_is_named_with_the_qemu_version():
    # Asks the installed QEMU (`-device help`), as a boot would; the missing model is one no QEMU has
    # (on Debian 12's QEMU 7.2 a real example is virtio-gpu-rutabaga-pci, from QEMU 8.2).
    version, known = machine.qemu_devices(machine.qemu_binary())
    assert "virtio-gpu-pci" in known and "virtio-net-pci" in known
    machine.check_devices(Profile("ok", "", devices=("virtio-gpu-pci,xres=800",)))
    with pytest.raises(MachineError, match=rf"needs the QEMU device 'no-such-gpu', which {re.escape(version)}"):
        machine.check_devices(Profile("new", "", devices=("no-such-gpu",)))


def test_numa_nodes_share_memory_and_cpus_out_evenly():
    profile = load_profile("numa2", "arm64")
    argv = qemu_argv(profile, Path("/k"), Path("/i"), 2222, "tcg")
    assert argv[0].endswith("qemu-system-aarch64")
    at = argv.index("-numa")
    assert argv[at - 2:at + 6] == [
        "-object", "memory-backend-ram,id=numa-mem0,size=512M", "-numa", "node,nodeid=0,memdev=numa-mem0,cpus=0",
        "-object", "memory-backend-ram,id=numa-mem1,size=512M", "-numa", "node,nodeid=1,memdev=numa-mem1,cpus=1"]
    assert "console=ttyAMA0" in argv[argv.index("-append") + 1]
    assert "-numa" not in qemu_argv(load_profile("default"), Path("/k"), Path("/i"), 2222, "tcg")
