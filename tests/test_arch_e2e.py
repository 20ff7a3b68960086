"""`harness kernel --arch arm64`: the project's configuration of Debian's 6.12, cross-built, is an arm64 kernel and
boots as one. The harness makes no arm64 guest image yet, so the boot is bare: QEMU's virt machine
with no initramfs, where the kernel gets as far as it can (both vCPUs up through PSCI, the GICv3, the PL011
console) and stops at the root mount it has nothing for. `make test-arm64` builds the kernel, then runs this
(12 min cold on 2 cores, beside other work); `make test` leaves it out: a fourth cold build would not fit the hour.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.kernel.arch import CompilerMissing, load_arch

pytestmark = pytest.mark.e2e
EM_AARCH64 = 183  # e_machine of an AArch64 ELF file


@pytest.fixture(scope="module")
def arm64_kernel() -> dict:
    try:
        load_arch("arm64").require_compiler()
    except CompilerMissing as e:  # make test installs it (configs/debian-packages.txt [arm64])
        pytest.skip(str(e))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "kernel", "--arch=arm64"], capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_the_cross_built_kernel_is_arm64(arm64_kernel: dict):
    image = Path(arm64_kernel["bzImage"])
    assert (arm64_kernel["arch"], image.name, arm64_kernel["initramfs"]) == ("arm64", "Image", None)
    # Documentation/arch/arm64/booting.rst: the Image header's magic, "ARM\x64", at offset 0x38
    assert image.read_bytes()[0x38:0x3C] == b"ARM\x64"
    build = image.parents[3]
    modules = (build / "modules.order").read_text().split()
    assert "lib/test_hmm.o" in modules  # the driver the suites need most, a module as on x86-64
    elf = (build / "lib/test_hmm.ko").read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == EM_AARCH64
    config = (build / ".config").read_text()
    for line in ("CONFIG_ARM64=y", "CONFIG_MMU_NOTIFIER=y", "CONFIG_TEST_HMM=m", "CONFIG_ARM_GIC_V3=y",
                 "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y"):
        assert line in config.splitlines(), line


def test_it_boots_on_the_virt_machine_with_every_vcpu(arm64_kernel: dict, tmp_path: Path):
    qemu = shutil.which("qemu-system-aarch64")
    if not qemu:
        pytest.skip("qemu-system-aarch64 not found: apt-get install qemu-system-arm")
    # gic-version=3 (the GICv3 of the arch fragment); -cpu max with the cheap pointer-auth algorithm (QARMA
    # under TCG costs several times more per syscall); no initramfs: the boot ends at the root mount, and
    # panic=-1 with -no-reboot ends QEMU there
    argv = [qemu, "-M", "virt,gic-version=3", "-cpu", "max,pauth-impdef=on", "-accel", "tcg,thread=multi",
            "-smp", "2", "-m", "1G", "-nographic", "-no-reboot", "-kernel", arm64_kernel["bzImage"],
            "-append", "console=ttyAMA0 panic=-1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    log = tmp_path / "console.log"
    log.write_text(proc.stdout + proc.stderr)
    console = proc.stdout
    assert "Booting Linux on physical CPU 0x0000000000" in console, f"no boot: {log}"
    assert "smp: Brought up 1 node, 2 CPUs" in console, f"not every vCPU came up (PSCI CPU_ON): {log}"
    assert "GICv3:" in console and "ttyAMA0" in console, log
    assert "VFS: Unable to mount root fs" in console, f"the boot stopped before the root mount: {log}"
    assert not any(s in console for s in ("Oops", "BUG:", "WARNING:", "Call trace")), f"a splat: {log}"
