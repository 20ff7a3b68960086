"""`--arch arm64`: the project's configuration of Debian's 6.12, cross-built, is an arm64 kernel with an arm64 image
(Debian's arm64 busybox, dropbear and libc, the guest programs and modules cross-built); it boots on QEMU's virt
machine with every vCPU, powers off through PSCI, runs a guest over SSH, and `harness compare` of a one-file mm
patch works on it. `make test-arm64` builds the kernels, runs this, then the event and race suites on arm64 6.12
and 7.3 (`harness run --arch arm64`); `make test` leaves it out: a fourth cold build would not fit the hour.
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
    assert (arm64_kernel["arch"], image.name) == ("arm64", "Image")
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


def test_its_image_is_arm64_throughout(arm64_kernel: dict):
    manifest = json.loads((Path(arm64_kernel["initramfs"]).parent / "manifest.json").read_text())
    assert manifest["arch"] == "arm64"
    # Debian's arm64 loader and libc (configs/arches/arm64.yaml), not the host's
    assert {"/lib/ld-linux-aarch64.so.1", "/lib/aarch64-linux-gnu/libc.so.6"} <= set(manifest["userland"])
    assert not [f for f in manifest["userland"] if "x86_64" in f]
    for programs in map(Path, manifest["guest_programs"]):
        for program in sorted(programs.iterdir()):
            elf = program.read_bytes()[:20]
            assert int.from_bytes(elf[18:20], "little") == EM_AARCH64, program


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


def test_it_powers_off_through_psci(arm64_kernel: dict, tmp_path: Path):
    """busybox's poweroff as the first process: reboot(RB_POWER_OFF) is PSCI's SYSTEM_OFF on the virt machine
    (drivers/firmware/psci), which ends QEMU with status 0, where a panic ends it only through -no-reboot."""
    qemu = shutil.which("qemu-system-aarch64")
    if not qemu:
        pytest.skip("qemu-system-aarch64 not found: apt-get install qemu-system-arm")
    argv = [qemu, "-M", "virt,gic-version=3", "-cpu", "max,pauth-impdef=on", "-accel", "tcg,thread=multi",
            "-smp", "2", "-m", "1G", "-nographic", "-no-reboot", "-kernel", arm64_kernel["bzImage"],
            "-initrd", arm64_kernel["initramfs"], "-append", "console=ttyAMA0 panic=-1 rdinit=/bin/poweroff -- -f"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    log = tmp_path / "console.log"
    log.write_text(proc.stdout + proc.stderr)
    assert "smp: Brought up 1 node, 2 CPUs" in proc.stdout, log
    assert "reboot: Power down" in proc.stdout and "Kernel panic" not in proc.stdout, log
    assert proc.returncode == 0, f"QEMU ended with {proc.returncode}: {log}"


def test_a_guest_answers_over_ssh_with_both_vcpus_online():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "shell", "--arch=arm64", "-c",
                           "uname -m; nproc; cat /sys/devices/system/cpu/online; cat /sys/kernel/debug/mmu_probe/events"
                           " >/dev/null && echo probe"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["aarch64", "2", "0-1", "probe"], proc.stdout + proc.stderr


def test_compare_of_a_one_file_mm_patch(tmp_path: Path):
    """tests/data/patches/mprotect-clear.patch (mm/mprotect.c alone) on arm64 6.12: the patched kernel is built on
    the base's build, and the five mprotect workloads' PROTECTION_VMA becomes CLEAR, named at its call site."""
    patch = Path(__file__).parent / "data" / "patches" / "mprotect-clear.patch"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--arch=arm64", "--patch", str(patch),
                           f"--results-dir={tmp_path}", "suites/test_events.py", "-k", "mprotect"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]  # only notifier events changed
    report = json.loads((tmp_path / "compare.json").read_text())
    changed = {e["case"]: (e["before"], e["after"]) for e in report["events"]}
    assert set(changed) == {"mprotect/none", "mprotect/ro-rw", "mprotect/rw-ro", "mprotect/unpop-pmd",
                            "mprotect/unpop-pud"}, changed
    assert all(change == ({"PROTECTION_VMA": 1}, {"CLEAR": 1}) for change in changed.values()), changed
    assert "arm64, machine default" in proc.stdout
    assert "PROTECTION_VMA x1 → CLEAR x1 on 'target' (equal) (mm/mprotect.c:change_pud_range)" in proc.stdout
    build = report["builds"]["patched"]  # built on the base's build (9.6 s: 12 files), or cached from a run before
    assert build.get("cached") or build["seeded_from_base"], build
