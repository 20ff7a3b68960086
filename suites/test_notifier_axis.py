"""The CONFIG_MMU_NOTIFIER axis: the same tree and fragments, built on and off (harness/kernel/config.py).

These tests run on both kernels and check that each is what its .config says, and that user-visible
memory behaviour is the same with and without the notifier. Run with --notifier=off for the off kernel.
"""

from __future__ import annotations

import pytest

from harness.kernel.build import BuildError
from harness.kernel.guest_modules import build_probe_module

pytestmark = pytest.mark.e2e


def test_every_vcpu_is_online(guest):
    # The profile's -smp N is only a promise: SeaBIOS's MP table lists CPU 0 alone, so without ACPI
    # (CONFIG_ACPI, whose MADT lists every vCPU: arch/x86/kernel/acpi/boot.c:acpi_parse_madt_lapic_entries)
    # the guest brings up one CPU and every race between CPUs is silently never run.
    want = guest.vm.profile.cpus
    nproc = int(guest.run(["nproc"], check=True).stdout)
    online = guest.run(["cat", "/sys/devices/system/cpu/online"], check=True).stdout.strip()
    assert nproc == want, f"profile {guest.vm.profile.name!r} asks for {want} CPUs, the guest has {nproc} online " \
                          f"(/sys/devices/system/cpu/online: {online})"
    assert online == (f"0-{want - 1}" if want > 1 else "0"), online


def test_kallsyms_agrees_with_the_config(guest, kernel):
    # mm/mmu_notifier.c (the home of __mmu_notifier_invalidate_range_start) is built only with
    # CONFIG_MMU_NOTIFIER (mm/Makefile: obj-$(CONFIG_MMU_NOTIFIER) += mmu_notifier.o).
    configured = kernel.build.has("MMU_NOTIFIER")
    result = guest.run(["grep", "-c", " __mmu_notifier_invalidate_range_start$", "/proc/kallsyms"])
    present = int(result.stdout.strip() or 0) > 0
    assert present == configured, (
        f"CONFIG_MMU_NOTIFIER={'y' if configured else 'n'} in {kernel.build.config}, but "
        f"__mmu_notifier_invalidate_range_start is {'present' if present else 'absent'} in /proc/kallsyms")


def test_probe_module_exists_only_with_the_notifier(guest, kernel):
    loaded = guest.run(["test", "-d", "/sys/kernel/debug/mmu_probe"]).ok
    if kernel.build.has("MMU_NOTIFIER"):
        assert loaded, "the probe module should be loaded on a notifier kernel"
    else:
        assert not loaded
        with pytest.raises(BuildError, match="CONFIG_MMU_NOTIFIER is not set"):
            build_probe_module(kernel.build)


def test_memory_operations_behave_the_same(guest, kernel):
    # With the notifier, the probe subscribes to the program's mm, so every operation also goes
    # through the notifier paths; without it, the same effects must hold on the plain paths.
    args = () if kernel.build.has("MMU_NOTIFIER") else ("--no-probe",)
    _, info = guest.program("mm_smoke", *args)
    assert info["checks"] == ["mmap", "mprotect_ro", "mprotect_rw", "mremap_grow", "mremap_shrink",
                              "madvise_dontneed", "madvise_cold", "madvise_pageout", "fork", "fork_cow",
                              "compaction", "munmap_partial", "munmap_rest"]
    if kernel.build.has("MMU_NOTIFIER"):
        seen = {e.event for e in guest.probe.events(pid=info["pid"]) if e.kind == "start"}
        # mremap's move: mm/mremap.c:move_page_tables() (MMU_NOTIFY_UNMAP); DONTNEED: mm/memory.c:
        # zap_page_range_single() (MMU_NOTIFY_CLEAR); mprotect: mm/mprotect.c:change_pud_range()
        # (MMU_NOTIFY_PROTECTION_VMA); munmap: mm/memory.c:unmap_vmas() (MMU_NOTIFY_UNMAP).
        assert {"UNMAP", "CLEAR", "PROTECTION_VMA"} <= seen, f"events seen: {sorted(seen)}"
