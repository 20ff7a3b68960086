"""The tree's own mm selftests (tools/testing/selftests/mm/, vm/ before 6.3), as configs/drivers/mm-selftests.yaml
lists them: each built statically against this kernel (harness/kernel/userprogs.py:mm_selftest) and run in the
guest as one test.

The verdict is kselftest's exit status (0 pass, 4 skip, anything else a failure; an exit 0 where every subtest
skipped is a skip: drivers.selftest_outcome), a skip keeping the program's own reasons. A failure whose failed
subtests are all known kernel failures (the profile's known_failures, patterns over "ID: SUBTEST", or "ID" when
the program stopped without naming one, each tied to the tree's code) is an xfail. The program's whole output,
under a count per status and every subtest that did not pass, is the test's output (the JUnit case's
system-out) and kselftest.txt in the test's results directory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.checks import drivers
from harness.checks.workloads import GuestSetup, Unavailable
from harness.kernel import userprogs

# fresh_guest: mm's selftests change sysctls, THP and KSM settings; ksm_tests once found pages an earlier test
# had merged on the same guest
PROFILE = drivers.load_driver("mm-selftests")
pytestmark = [pytest.mark.e2e, pytest.mark.fresh_guest,
              pytest.mark.arches(*PROFILE.arches, why="configs/drivers/mm-selftests.yaml: not run there yet")]

# Why a skip happens here, from reading the test and mm/ (drivers.SkipCause)
SKIP_CAUSES: list[drivers.SkipCause] = [
    # cow.c (and gup_longterm.c) open /sys/kernel/debug/gup_test, which mm/gup_test.c creates: CONFIG_GUP_TEST
    ("gup_test not available", "/sys/kernel/debug/gup_test is made by mm/gup_test.c", "GUP_TEST", None),
    # migration.c:FIXTURE_SETUP: self->nthreads = numa_num_task_cpus() - 2, and `nthreads < 1` skips. Our guests
    # have no ACPI, so the kernel brings up only the CPUs of SeaBIOS's MP table: CPU 0
    ("Not enough threads or NUMA nodes available", "migration.c:FIXTURE_SETUP wants 3 CPUs or more (it runs "
     "numa_num_task_cpus() - 2 threads) and 2 nodes", None,
     "echo this guest: $(nproc) CPU online, nodes $(cat /sys/devices/system/node/online)"),
    # guard-regions.c (uffd tests): userfaultfd(2) is kernel/sys_ni.c's ENOSYS stub without CONFIG_USERFAULTFD
    ("userfaultfd is not supported/not enabled", "userfaultfd(2) returns ENOSYS (kernel/sys_ni.c)", "USERFAULTFD",
     None),
    # cow.c "collapsing after fork() (fully shared)": after fork() every PTE of the THP is write-protected for COW,
    # and 6.12's khugepaged wants one writable PTE (mm/khugepaged.c:hpage_collapse_scan_pmd, `if (!writable)
    # result = SCAN_PAGE_RO`, line 1412), which madvise_collapse_errno() returns as -EINVAL (its default case).
    # 7.3's collapse_scan_pmd no longer checks for a writable PTE.
    ("MADV_COLLAPSE failed: Invalid argument", "MADV_COLLAPSE of a range with no writable PTE fails with SCAN_PAGE_RO "
     "(mm/khugepaged.c:hpage_collapse_scan_pmd) -> EINVAL", None, None),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "selftest" in metafunc.fixturenames:
        metafunc.parametrize("selftest", drivers.selftest_params(PROFILE))


@pytest.fixture
def program(selftest: drivers.SelftestRun, kernel, guest) -> str:
    return drivers.built_selftest(userprogs.mm_selftest, kernel.build, selftest, guest.ssh)


@pytest.fixture
def setup(selftest: drivers.SelftestRun, guest) -> Iterator[None]:
    """What the run needs in the guest first (swap for MADV_PAGEOUT, ...), undone after it."""
    s = GuestSetup(guest.ssh)
    try:
        for need in selftest.needs:
            s.provide(need)
    except Unavailable as e:
        s.restore()
        pytest.skip(f"the guest cannot provide {need}: {e}")
    yield
    s.restore()


def test_mm_selftest(selftest: drivers.SelftestRun, program: str, setup, guest, kernel):
    """One run of one of the tree's mm selftests; the verdict is the kernel test's own."""
    drivers.run_selftest(guest, kernel, PROFILE, selftest, program, SKIP_CAUSES)
