"""Architectures (harness/kernel/arch.py, configs/arches/): what make is given, which one a .config is for, and
the fragment each adds to a configuration. A real cross-built configuration: tests/test_config_differential.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kernel import config
from harness.kernel.arch import HOST, ArchError, arch_of, known_arches, load_arch
from harness.kernel.build import make_cmd
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
