"""The tree's own KVM selftests that exercise KVM's mmu_notifier, as configs/drivers/kvm-selftests.yaml lists
them: each built by the tree's tools/testing/selftests/kvm/Makefile, static (userprogs.kvm_selftest), and run in
a guest with SVM and NPT (configs/machines/kvm-selftests.yaml) as one test, nested under TCG.

The verdict is the program's exit status (0 pass, 4 skip, anything else a failure: a failed TEST_ASSERT prints
"==== Test Assertion Failure ====" and exits 254); they print no KTAP, so a skip's reason is the program's last
words ("Requirement not met: ..."). Failures known to the profile, tied to the kernel's code, are xfails. The
whole output is the test's output and kselftest.txt in its results directory.

A passing run of a program that changes the memory its VMs map must also have made the invalidations that reach
KVM's notifier: the kprobe observer (harness/observe/kprobe.py, on __mmu_notifier_invalidate_range_start, which
an mm reaches only with a subscriber: KVM's) must see them, from the program's own task.
"""

from __future__ import annotations

import pytest

from harness.checks import drivers
from harness.kernel import userprogs
from harness.observe import kprobe

PROFILE = drivers.load_driver("kvm-selftests")
# fresh_guest: KVM's selftests leave hugepages reserved and VMs' global state behind
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.machine(PROFILE.machine),
              pytest.mark.fresh_guest,
              pytest.mark.arches(*PROFILE.arches, why="the tree's x86 KVM selftests, built with ARCH=x86_64")]

# Why a skip happens here, from reading the tests (drivers.SkipCause)
SKIP_CAUSES: list[drivers.SkipCause] = [
    # access_tracking_perf_test marks guest memory idle through /sys/kernel/mm/page_idle/bitmap, which
    # mm/page_idle.c makes (6.12: "CONFIG_IDLE_PAGE_TRACKING is not enabled"; 7.x tries MGLRU first, then asks
    # "Is CONFIG_IDLE_PAGE_TRACKING enabled?")
    ("IDLE_PAGE_TRACKING", "access_tracking_perf_test needs /sys/kernel/mm/page_idle/bitmap (mm/page_idle.c)",
     "IDLE_PAGE_TRACKING", None),
]


# The events each program's own task must cause on memory its VMs map, from its source and mm/
INVALIDATIONS = {
    # mmu_stress_test.c: mprotect(PROT_READ), then PROT_READ|PROT_WRITE, of the memfd a VM maps
    # (mm/mprotect.c:change_pud_range, PROTECTION_VMA), then kvm_munmap() of its first half (mm/memory.c:unmap_vmas)
    "mmu_stress_test": {"PROTECTION_VMA", "UNMAP"},
    # max_guest_memory_test.c: munmap(mem, slot_size / 2)
    "max_guest_memory_test": {"UNMAP"},
    # memslot_perf_test.c:test_memslot_unmap_loop: madvise(MADV_DONTNEED) of guest memory
    # (mm/memory.c:zap_page_range_single, 7.x zap_vma_range_batched: CLEAR)
    "memslot_perf_test-unmap": {"CLEAR"},
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "selftest" in metafunc.fixturenames:
        metafunc.parametrize("selftest", drivers.selftest_params(PROFILE))


@pytest.fixture
def program(selftest: drivers.SelftestRun, kernel, guest) -> str:
    drivers.require_kvm(guest, kernel, PROFILE)
    return drivers.built_selftest(userprogs.kvm_selftest, kernel.build, selftest, guest.ssh)


def test_kvm_selftest(selftest: drivers.SelftestRun, program: str, guest, kernel):
    """One run of one of the tree's KVM selftests; the verdict is the kernel test's own, and where the program
    changes what its VMs map, the invalidations that reach KVM."""
    expected = INVALIDATIONS.get(selftest.id)
    observer = kprobe.KprobeObserver(guest.ssh, kprobe.range_layout(kernel.build)) if expected else None
    if observer:
        observer.install()
    try:
        drivers.run_selftest(guest, kernel, PROFILE, selftest, program, SKIP_CAUSES)  # a skip or failure raises
        if not (observer and expected):
            return
        names = kprobe.event_names(kernel.build)
        hits = [h for h in observer.hits() if h.comm == selftest.program[:15]]  # TASK_COMM_LEN 16
        guest.save("invalidations.txt", "\n".join(f"{h.named(names)} [{h.start:#x}, {h.end:#x}) pid {h.pid}"
                                                   for h in hits) + "\n")
        seen = {h.named(names) for h in hits}
        print(f"invalidations by {selftest.program}: " + ", ".join(
            f"{name} {sum(h.named(names) == name for h in hits)}" for name in sorted(seen)))
        assert expected <= seen, f"{selftest.program} passed, but its task made no {sorted(expected - seen)} " \
                                 f"invalidation (seen: {sorted(seen)})"
    finally:
        if observer:
            observer.remove()
