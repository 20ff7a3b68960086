"""lib/test_hmm.c, the HMM device mirror, under test.

1. The tree's own tools/testing/selftests/mm/hmm-tests, built against this kernel, one pytest case per
   kernel test (collected from hmm-tests.c, run alone with `-r NAME`; 6.1's selftests/vm/hmm-tests has no
   -r, so it runs once and each case takes its own result), with the kernel's verdict: a kernel SKIP is a
   skip with its reason, a failure carries its log, a failure caused by known kernel code is an xfail
   (configs/drivers/test_hmm.yaml).
2. Our scenarios (guest/kprograms/hmm_mirror.c): 16 pages mirrored by the device, then mprotect /
   madvise / mremap / munmap; after each, what the device still holds, page by page, and the notifier
   event the mmu_probe observer saw for the same range.
"""

from __future__ import annotations

import functools
import json

import pytest

from harness.checks import drivers
from harness.checks.workloads import GuestSetup
from harness.kernel import trees, userprogs
from harness.observe import ktap, probe

# fresh_guest: test_hmm loaded (for every test here: they share it), huge pages reserved and given back
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.fresh_guest(scope="module")]
PROFILE = drivers.load_driver("test_hmm")
# kselftest_harness.h kills a test after 30 s (TEST_TIMEOUT_DEFAULT); the whole hmm-tests takes ~8 s on TCG (6.12).
KSELFTEST_TIMEOUT = 120

# HMM_DMIRROR_PROT_* of lib/test_hmm_uapi.h, as HMM_DMIRROR_SNAPSHOT reports a page
PROT_NONE, PROT_READ, PROT_WRITE, PROT_ERROR = 0x00, 0x01, 0x02, 0xFF
NPAGES = 16  # hmm_mirror's range


@functools.cache
def kernel_tests(ksrc: str | None) -> tuple[str, ...]:
    """FIXTURE.VARIANT.TEST names of the tree's hmm-tests.c (none if the tree has no hmm-tests)."""
    src = userprogs.hmm_tests_source(trees.resolve(ksrc).path)
    return tuple(ktap.tests_in_source(src.read_text())) if src else ()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_test" in metafunc.fixturenames:
        ksrc = metafunc.config.getoption("kernel_src")
        # any of them may be the one that runs them all (see kernel_result): each gets the watchdog for that
        whole = () if drivers.runs_one_test(trees.resolve(ksrc).path) else (
            pytest.mark.test_timeout(WHOLE_RUN_TIMEOUT + 60),)
        tests = kernel_tests(ksrc)
        if tests:  # a tree without hmm-tests has nothing to hold the profile's patterns against
            drivers.check_kernel_tests(PROFILE, tests)
        metafunc.parametrize("kernel_test", [pytest.param(t, marks=whole) for t in tests])


@pytest.fixture
def hmm(guest, kernel):
    """The guest with test_hmm loaded (/dev/hmm_dmirror*), and huge pages to spare where the kernel has hugetlb."""
    drivers.require_config(kernel.build, *PROFILE.config)
    drivers.load_module(guest.ssh, PROFILE)
    setup = GuestSetup(guest.ssh)
    if kernel.build.has("HUGETLBFS"):
        setup.provide("hugepages")
    yield guest
    setup.restore()


@pytest.fixture
def hmm_tests(hmm, kernel) -> str:
    return drivers.install(hmm.ssh, userprogs.hmm_tests(kernel.build))


# A tree whose kselftest_harness.h cannot run one test (6.1: no -r) runs them all, once per session, and each
# test takes its result from that run. Measured on 6.1 under TCG on a loaded host: 94-120 s, 90 of them in the
# three exclusive* tests, which 6.1's harness lets spin until its 30 s timeout (see test_hmm.yaml). The command
# timeout stays under the test's watchdog (a test_timeout mark, 60 s more), so that a run that hangs ends as a
# TIMEOUT naming the command, and the tests after it report at once that they have no result instead of each
# booting a guest to run everything again (how the 6.1 cell once ran past its 1500 s: 6.1 ignores `-r NAME`).
WHOLE_RUN_TIMEOUT = 540
_whole_run: dict[str, object] = {}  # run: ktap.Run, output: str, ended: why the run gave no output, by: its test


def kernel_result(hmm, binary: str, test: str, tree) -> tuple[ktap.TestResult | None, str]:
    """One kernel test's result and log: run alone, or picked from the session's one run of them all."""
    if drivers.runs_one_test(tree):
        return drivers.run_kselftest(hmm.ssh, binary, test, KSELFTEST_TIMEOUT * hmm.vms.scale)
    if not _whole_run:
        # A splat during this run fails the test that started it: the others ran in its time. Repeated
        # lines are dropped: 6.1's harness repeats a failing teardown ASSERT until the test's 30 s timeout.
        _whole_run.update(run=ktap.Run(), output="", by=test, ended=None)
        try:
            output = hmm.run(["sh", "-c", 'cd /tmp && "$0" 2>&1 | awk \'$0 != last { print; last = $0 }\'', binary],
                             timeout=WHOLE_RUN_TIMEOUT * hmm.vms.scale).stdout
        except BaseException as e:
            _whole_run["ended"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            raise
        _whole_run.update(run=ktap.parse(output), output=output)
    run, output = _whole_run["run"], _whole_run["output"]
    result = run.by_name().get(test)
    if result is None and _whole_run["ended"]:
        pytest.fail(f"no result for {test}: this tree's hmm-tests runs all its tests at once (no -r), and that run, "
                    f"started by {_whole_run['by']}, ended without output ({_whole_run['ended']})", pytrace=False)
    return result, result.log if result else output


# A kernel skip whose reason is one of these, on a build without the symbol, says which config it missed.
SKIP_CAUSES = {
    # hmm-tests.c (anon_write_hugetlbfs, compound) reads Hugepagesize: from /proc/meminfo, which
    # mm/hugetlb.c:hugetlb_report_meminfo prints (4711 in 6.1, 4933 in 6.12) only with CONFIG_HUGETLB_PAGE
    # (a stub otherwise, include/linux/hugetlb.h:317 / :347), and HUGETLB_PAGE is `def_bool HUGETLBFS` (fs/Kconfig)
    "Huge page size could not be determined": "HUGETLBFS",
    # hmm_gup_test opens /sys/kernel/debug/gup_test, which mm/gup_test.c creates (built with CONFIG_GUP_TEST)
    "could not find gup_test driver": "GUP_TEST",
}


def test_kernel_selftest(hmm, hmm_tests, kernel_test, kernel):
    """One kernel test of hmm-tests; the verdict and the log are the kernel's own."""
    result, output = kernel_result(hmm, hmm_tests, kernel_test, kernel.tree.path)
    hmm.save("kselftest.txt", output)
    print(output)  # the JUnit case's system-out
    if result and result.status == "skip":
        for said, symbol in SKIP_CAUSES.items():
            if said in result.reason and not kernel.build.has(symbol):
                pytest.skip(f"kernel: {result.reason} (CONFIG_{symbol} is not set in this kernel)")
    known = None
    if result and result.status == "fail":
        known = PROFILE.known_failure(kernel_test, kernel.tree.series, drivers.thp_mode(hmm.ssh), kernel.tree.path)
    drivers.verdict(result, output, kernel_test, known)


def test_kernel_selftest_list_matches_the_program(hmm, hmm_tests, kernel, request):
    """The tests collected from hmm-tests.c are exactly those the built program lists (-l)."""
    if not drivers.runs_one_test(kernel.tree.path):
        pytest.skip("this tree's kselftest_harness.h has no -l: its tests are known from the run itself")
    # the table is on stderr; with hugetlb, tools/testing/selftests/mm/hugepage_settings.c prints "[INFO] detected
    # hugetlb page size" on stdout at startup, which 2>&1 interleaved into the table's lines
    listed = ktap.harness_list(hmm.run(["sh", "-c", '"$0" -l 2>&1 >/dev/null', hmm_tests]).stdout)
    assert listed == list(kernel_tests(request.config.getoption("kernel_src")))


# --- our scenarios ----------------------------------------------------------------------------------

# op: first page, pages, the event the probe must see over [first, first + pages), and where the kernel
# sends it (6.12)
STEPS = {
    "mprotect_read": (8, 4, "PROTECTION_VMA", "mm/mprotect.c:change_pud_range()"),
    "madvise_dontneed": (4, 2, "CLEAR", "mm/madvise.c:madvise_dontneed_single_vma() -> zap_page_range_single()"),
    "mremap_move": (0, 4, "UNMAP", "mm/mremap.c:move_page_tables(), for the old range"),
    "munmap": (12, 4, "UNMAP", "mm/memory.c:unmap_vmas()"),
}


@pytest.fixture
def mirror(hmm, kernel) -> tuple[dict, list[probe.Event]]:
    """Run hmm_mirror once: its report (steps by op) and the probe's events for its process."""
    program = drivers.install(hmm.ssh, userprogs.kprogram(kernel.build, "hmm_mirror"))
    _, info = hmm.program(program.rsplit("/", 1)[1])
    events = hmm.probe.events(pid=info["pid"])
    hmm.save("hmm_mirror.json", json.dumps(info, indent=1))
    hmm.save("events.json", probe.dump_events(events))
    assert info["probed"] == 1
    info["by_op"] = {s["op"]: s for s in info["steps"]}
    return info, events


def test_dmirror_mirrors_the_whole_range(mirror):
    info, _ = mirror
    step = info["by_op"]["mirror"]
    assert step["ret"] == 0 and step["cpages"] == NPAGES
    assert step["faults"] >= 1, "the device mirrored nothing before, so its first read must fault"
    assert step["prot"] == [PROT_WRITE] * NPAGES
    assert step["device"] == [1] * NPAGES, "right after its READ the device must hold every page"
    assert step["data"] == [1] * NPAGES, "the device read other bytes than the process wrote"


@pytest.mark.parametrize("op", STEPS)
def test_dmirror_invalidated_by(mirror, op):
    """The notifier event covers the range, the device drops every page in it and keeps those far from it."""
    info, events = mirror
    first, count, event, call_site = STEPS[op]
    page = info["page_size"]
    step = info["by_op"][op]
    assert step["ret"] == 0, f"{op} failed with errno {step['errno']}"
    start, end = info["start"] + first * page, info["start"] + (first + count) * page
    assert (step["start"], step["end"]) == (start, end)
    seen = [e for e in events if e.kind == "start" and e.event == event and e.covers(start, end)]
    assert seen, (f"{call_site} should send {event} over [{start:#x}, {end:#x}); the probe saw: "
                  f"{[(e.event, hex(e.start), hex(e.end)) for e in events if e.kind == 'start']}")

    inside = range(first, first + count)
    device = step["device"]
    assert all(device[k] != 1 for k in inside), (
        f"after {op} the device still held pages of the invalidated range: device={device} "
        "(1 = still held, 0 = faulted back in, -1 = unmapped)")
    far = [k for k in range(NPAGES) if k not in inside and k != first + count and device[k] != -1]
    assert all(device[k] == 1 for k in far), f"after {op} the device dropped pages it had no reason to: {device}"
    assert all(step["data"][k] == 1 for k in range(NPAGES) if device[k] != -1), f"device read wrong data: {step}"

    prot = step["prot"]
    if op == "mprotect_read":
        assert [prot[k] for k in inside] == [PROT_READ] * count
    elif op == "madvise_dontneed":
        assert [prot[k] for k in inside] == [PROT_NONE] * count
    else:
        assert [prot[k] for k in inside] == [PROT_ERROR] * count and [device[k] for k in inside] == [-1] * count
    if op == "mremap_move":  # the moved pages: never mirrored at their new address, same data
        assert step["new_prot"] == [PROT_WRITE] * count
        assert step["new_device"] == [0] * count and step["new_data"] == [1] * count


@pytest.mark.parametrize("op", [op for op, (first, count, _, _) in STEPS.items() if first + count < NPAGES])
def test_dmirror_invalidation_is_exact(mirror, op, kernel, request):
    """The device keeps the page right after the invalidated range (the notifier's end is exclusive)."""
    if known := PROFILE.known_failure(request.node.name, kernel.tree.series, tree=kernel.tree.path):
        request.applymarker(pytest.mark.xfail(reason=f"known kernel bug: {known}", strict=False))
    info, _ = mirror
    first, count, _, _ = STEPS[op]
    device = info["by_op"][op]["device"]
    assert device[first + count] == 1, (
        f"after {op} over pages [{first}, {first + count}) the device dropped page {first + count} too: {device}")
