"""Architectures (harness/kernel/arch.py, configs/arches/): what make is given, which one a .config is for, and
the fragment each adds to a configuration. A real cross-built configuration: tests/test_config_differential.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.kernel import config, debian, image
from harness.kernel.arch import HOST, ArchError, arch_of, known_arches, load_arch
from harness.kernel.build import BuildError, make_cmd
from harness.kernel.source import KernelTree


def test_the_known_architectures_and_what_make_is_given():
    assert known_arches() == ["arm64", "x86_64"]
    tree = KernelTree(Path("/src/linux"), "6.12.117", "test", True)
    # the host's make line is the one every x86-64 build of the cache was made with (its keys must not move)
    assert make_cmd(tree, Path("/b"), "bzImage") == [
        "make", "-C", "/src/linux", "O=/b", "ARCH=x86_64", "CC=ccache gcc", "HOSTCC=ccache gcc", "bzImage"]
    arm64 = load_arch("arm64")
    assert make_cmd(tree, Path("/b"), arm64.image, arch=arm64)[4:] == [
        "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "CC=ccache aarch64-linux-gnu-gcc", "HOSTCC=ccache gcc",
        "Image"]
    assert (arm64.image_path, load_arch().image_path) == ("arch/arm64/boot/Image", "arch/x86/boot/bzImage")


def test_a_config_says_its_architecture():
    assert arch_of({"ARM64": "y", "64BIT": "y"}).name == "arm64"
    assert arch_of({"X86_64": "y"}).name == "x86_64"
    assert arch_of({}).name == HOST  # a .config that names none (a test's) is the host's


def test_an_unknown_architecture_is_named_with_the_known_ones():
    with pytest.raises(ArchError, match=r"unknown architecture 'riscv64'; known: arm64, x86_64"):
        load_arch("riscv64")
    with pytest.raises(ArchError, match="riscv64"):
        config.config_spec("on", "6.12", arch="riscv64")


def test_each_architecture_adds_its_own_fragment_and_nothing_else_differs():
    x86 = config.config_spec("on", "6.12")
    arm = config.config_spec("on", "6.12", arch="arm64")
    assert [f.name for f in x86.fragments if f.parent.name == "arch"] == ["x86_64.config"]
    assert [f.name for f in arm.fragments if f.parent.name == "arch"] == ["arm64.config"]
    common = [f for f in x86.fragments if f.parent.name != "arch"]
    assert common == [f for f in arm.fragments if f.parent.name != "arch"]
    assert (x86.arch, arm.arch) == ("x86_64", "arm64")
    # what only x86-64 has is asked for there alone: base.config and drivers.config are every architecture's
    shared = {r.symbol for f in common for r in config.kconfig.parse_fragment(f)}
    assert not shared & {"ACPI", "KERNEL_GZIP", "MEM_SOFT_DIRTY", "KVM_AMD", "KVM_INTEL"}


def test_busybox_applets_are_read_from_the_binary_as_busybox_lists_them():
    """The applet table of a busybox the host cannot run (an arm64 one) is read, not executed: the host's busybox,
    read the same way, must give what its own --list prints."""
    host = Path("/bin/busybox")
    if not host.exists():
        pytest.skip("busybox-static is not installed")
    listed = subprocess.run([str(host), "--list"], capture_output=True, text=True, check=True).stdout.split()
    assert list(image.busybox_applets(host.read_bytes())) == listed
    with pytest.raises(BuildError, match="no applet table"):
        image.busybox_applets(b"\x7fELF not a busybox")


def test_a_link_of_an_unpacked_package_stays_a_link_only_to_a_file_of_the_image(tmp_path: Path):
    (tmp_path / "libfoo.so.1.2").write_text("lib")
    (tmp_path / "libfoo.so.1").symlink_to("libfoo.so.1.2")
    (tmp_path / "ld.so").symlink_to("/lib/aarch64-linux-gnu/ld.so")
    assert image._link_target(tmp_path / "libfoo.so.1", "/lib/x/libfoo.so.1") == "/lib/x/libfoo.so.1.2"
    assert image._link_target(tmp_path / "ld.so", "/lib/ld.so") == "/lib/aarch64-linux-gnu/ld.so"
    assert image._link_target(tmp_path / "libfoo.so.1.2", "/lib/x/libfoo.so.1.2") is None


def test_a_foreign_userland_is_fetched_with_a_private_apt_state_of_its_own_architecture(tmp_path: Path):
    options = debian._private_apt(tmp_path / "apt", "Types: deb\n", "arm64")
    pairs = dict(o.split("=", 1) for o in options if o != "-o")
    assert pairs["APT::Architectures"] == pairs["APT::Architecture"] == "arm64"
    # its own dpkg status (empty), lists and cache: nothing of the system's apt or dpkg state is read or written
    assert pairs["Dir::State::status"] == str(tmp_path / "apt" / "status")
    assert (tmp_path / "apt" / "status").read_text() == ""
    assert all(str(tmp_path) in pairs[k] for k in ("Dir::Etc::sourcelist", "Dir::State::Lists", "Dir::Cache"))
    assert pairs["Dir::Etc::sourceparts"] == "-"
