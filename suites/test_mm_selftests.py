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

import shlex
from collections.abc import Iterator

import pytest

from harness.checks import drivers
from harness.checks.workloads import GuestSetup, Unavailable
from harness.kernel import userprogs
from harness.observe import ktap

pytestmark = [pytest.mark.e2e]
PROFILE = drivers.load_driver("mm-selftests")

# Why a skip happens here, from reading the test and mm/: (text in the skip's reason, why, the config symbol that
# would lift it or None, a guest command whose output is the fact that matters or None)
SKIP_CAUSES = [
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
        # the guest's watchdog: the program's own timeout, then a minute to collect what it printed
        metafunc.parametrize("selftest", [
            pytest.param(run, id=run.id, marks=pytest.mark.test_timeout(run.timeout + 60))
            for run in PROFILE.programs])


@pytest.fixture
def program(selftest: drivers.SelftestRun, kernel, guest) -> str:
    """The selftest built against this kernel and copied into the guest."""
    try:
        local = userprogs.mm_selftest(kernel.build, selftest.program)
    except userprogs.SelftestMissing as e:
        pytest.skip(str(e))
    except userprogs.CompileError as e:  # our build's problem, not the kernel's: say which line stopped it
        pytest.fail(f"{selftest.program} does not build statically against {kernel.build.release}: "
                    f"{e.first_error}", pytrace=False)
    return drivers.install(guest.ssh, local)


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


def explain_skips(reasons: list[str], guest, kernel) -> list[str]:
    out = []
    for said, why, symbol, fact in SKIP_CAUSES:
        if any(said in reason for reason in reasons):
            note = why
            if symbol and not kernel.build.has(symbol):
                note += f" (CONFIG_{symbol} is not set in this kernel)"
            if fact:
                note += f" ({guest.run(['sh', '-c', fact]).stdout.strip()})"
            out.append(note)
    return out


def test_mm_selftest(selftest: drivers.SelftestRun, program: str, setup, guest, kernel):
    """One run of one of the tree's mm selftests; the verdict is the kernel test's own."""
    limit = selftest.timeout * guest.vms.scale
    # busybox timeout kills the program, not the session, so what it printed until then is kept: since 6.12
    # ksft_print_header() makes stdout line-buffered (kselftest.h, "If there is a crash..."); 6.1's is not.
    result = guest.run(["sh", "-c", 'cd /tmp && exec timeout -s KILL "$0" "$@" 2>&1',
                        str(int(limit)), program, *selftest.args], timeout=limit + 30)
    run = ktap.parse(result.stdout)
    command = shlex.join([selftest.program, *selftest.args])
    skipped = [r for r in run.results if r.status == "skip"]
    reasons = sorted({drivers.subtest_reason(r) or "no reason given" for r in skipped})
    why_skipped = explain_skips(reasons, guest, kernel)
    head = "".join([f"$ {command}\nexit status {result.exit_status} after {result.duration_s:.1f} s on "
                    f"{kernel.build.release}\n{drivers.subtests_summary(run)}\n",
                    *(f"why skipped: {why}\n" for why in why_skipped)])
    guest.save("kselftest.txt", head + "\n" + result.stdout)
    print(head + "\n" + result.stdout)  # the JUnit case's system-out

    status = result.exit_status
    if result.duration_s >= limit:
        pytest.fail(f"{command} was killed after {limit:.0f} s; its last lines:\n"
                    + "\n".join(result.stdout.splitlines()[-15:]), pytrace=False)
    outcome = drivers.selftest_outcome(status, run)
    if outcome == "skip":
        said = reasons or [result.stdout.strip()[-300:]]  # ksft_exit_skip() before any subtest: its message
        pytest.skip(f"kernel: {'; '.join(said + why_skipped)}")
    if outcome == "pass":
        return

    failed = [r for r in run.results if r.status == "fail"]
    thp = drivers.thp_mode(guest.ssh)
    # every failed subtest must be known, or the program as a whole when it stopped without a failed subtest
    names = [f"{selftest.id}: {drivers.subtest_name(r)}" for r in failed] or [selftest.id]
    known = {name: PROFILE.known_failure(name, kernel.tree.series, thp, kernel.tree.path, kernel.build.has)
             for name in names}
    if all(known.values()):
        pytest.xfail("known failure: " + " | ".join(sorted({str(why) for why in known.values()})))
    unknown = [name for name, why in known.items() if not why]
    logs = [r.log for r in failed if f"{selftest.id}: {drivers.subtest_name(r)}" in unknown]
    pytest.fail(f"{command} exited {status}; not known: {', '.join(unknown)}\n"
                + ("\n".join(logs) or "\n".join(result.stdout.splitlines()[-30:])), pytrace=False)
