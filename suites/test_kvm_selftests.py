"""The tree's own KVM selftests that exercise KVM's mmu_notifier, as configs/drivers/kvm-selftests.yaml lists
them: each built by the tree's tools/testing/selftests/kvm/Makefile, static (userprogs.kvm_selftest), and run in
a guest with SVM and NPT (configs/machines/kvm-selftests.yaml) as one test, nested under TCG.

The verdict is the program's exit status (0 pass, 4 skip, anything else a failure: a failed TEST_ASSERT prints
"==== Test Assertion Failure ====" and exits 254); they print no KTAP, so a skip's reason is the program's last
words ("Requirement not met: ..."). Failures known to the profile, tied to the kernel's code, are xfails. The
whole output is the test's output and kselftest.txt in its results directory.
"""

from __future__ import annotations

import pytest

from harness.checks import drivers
from harness.kernel import userprogs

PROFILE = drivers.load_driver("kvm-selftests")
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.machine(PROFILE.machine)]

# Why a skip happens here, from reading the tests (drivers.SkipCause)
SKIP_CAUSES: list[drivers.SkipCause] = [
    # access_tracking_perf_test marks guest memory idle through /sys/kernel/mm/page_idle/bitmap, which
    # mm/page_idle.c makes (6.12: "CONFIG_IDLE_PAGE_TRACKING is not enabled"; 7.x tries MGLRU first, then asks
    # "Is CONFIG_IDLE_PAGE_TRACKING enabled?")
    ("IDLE_PAGE_TRACKING", "access_tracking_perf_test needs /sys/kernel/mm/page_idle/bitmap (mm/page_idle.c)",
     "IDLE_PAGE_TRACKING", None),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "selftest" in metafunc.fixturenames:
        metafunc.parametrize("selftest", drivers.selftest_params(PROFILE))


@pytest.fixture
def program(selftest: drivers.SelftestRun, kernel, guest) -> str:
    drivers.require_kvm(guest, kernel, PROFILE)
    return drivers.built_selftest(userprogs.kvm_selftest, kernel.build, selftest, guest.ssh)


def test_kvm_selftest(selftest: drivers.SelftestRun, program: str, guest, kernel):
    """One run of one of the tree's KVM selftests; the verdict is the kernel test's own."""
    drivers.run_selftest(guest, kernel, PROFILE, selftest, program, SKIP_CAUSES)
