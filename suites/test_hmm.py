"""lib/test_hmm.c, the HMM device mirror, under test.

1. The tree's own tools/testing/selftests/mm/hmm-tests, built against this kernel, one pytest case per
   kernel test (collected from hmm-tests.c, run alone with `-r NAME`), with the kernel's verdict: a
   kernel SKIP is a skip with its reason, a failure carries its log.
2. Our scenarios (guest/kprograms/hmm_mirror.c): 16 pages mirrored by the device, then mprotect /
   madvise / mremap / munmap; after each, what the device still holds, page by page, and the notifier
   event the mmu_probe observer saw for the same range.
"""

from __future__ import annotations

import functools
import json

import pytest

from harness import drivers, ktap, observe, source, userprogs

pytestmark = pytest.mark.needs_notifier
PROFILE = drivers.load_driver("test_hmm")
# kselftest_harness.h kills a test after 30 s (TEST_TIMEOUT_DEFAULT); the whole hmm-tests takes ~8 s on TCG.
KSELFTEST_TIMEOUT = 120

# HMM_DMIRROR_PROT_* of lib/test_hmm_uapi.h, as HMM_DMIRROR_SNAPSHOT reports a page
PROT_NONE, PROT_READ, PROT_WRITE, PROT_ERROR = 0x00, 0x01, 0x02, 0xFF
NPAGES = 16  # hmm_mirror's range


@functools.cache
def kernel_tests(ksrc: str | None) -> tuple[str, ...]:
    """FIXTURE.VARIANT.TEST names of the tree's hmm-tests.c (none if the tree has no hmm-tests)."""
    src = userprogs.hmm_tests_source(source.resolve(ksrc).path)
    return tuple(ktap.tests_in_source(src.read_text())) if src else ()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_test" in metafunc.fixturenames:
        metafunc.parametrize("kernel_test", kernel_tests(metafunc.config.getoption("kernel_src")))


@pytest.fixture
def hmm(guest, kernel):
    """The guest with test_hmm loaded (/dev/hmm_dmirror*)."""
    drivers.require_config(kernel.build, *PROFILE.config)
    drivers.load_module(guest.ssh, PROFILE)
    return guest


@pytest.fixture
def hmm_tests(hmm, kernel) -> str:
    return drivers.install(hmm.ssh, userprogs.hmm_tests(kernel.build))


# A tree whose hmm-tests cannot run one test (no -r) runs them all once per guest: (vm, run, output).
_whole_run: list[tuple[object, ktap.Run, str]] = []


def kernel_result(hmm, binary: str, test: str, tree) -> tuple[ktap.TestResult | None, str]:
    """One kernel test's result and log: run alone, or picked from the guest's run of them all."""
    timeout = KSELFTEST_TIMEOUT * hmm.vms.scale
    if drivers.runs_one_test(tree):
        return drivers.run_kselftest(hmm.ssh, binary, test, timeout)
    if not _whole_run or _whole_run[0][0] is not hmm.vm:
        # A splat during this run fails the test that started it: the others ran in its time. Repeated
        # lines are dropped: 6.1's harness repeats a failing teardown ASSERT until the test's 30 s timeout.
        output = hmm.run(["sh", "-c", 'cd /tmp && "$0" 2>&1 | awk \'$0 != last { print; last = $0 }\'', binary],
                         timeout=timeout * 10).stdout
        _whole_run[:] = [(hmm.vm, ktap.parse(output), output)]
    _, run, output = _whole_run[0]
    result = run.by_name().get(test)
    return result, result.log if result else output


def test_kernel_selftest(hmm, hmm_tests, kernel_test, kernel):
    """One kernel test of hmm-tests; the verdict and the log are the kernel's own."""
    result, output = kernel_result(hmm, hmm_tests, kernel_test, kernel.tree.path)
    hmm.save("kselftest.txt", output)
    print(output)  # the JUnit case's system-out
    known = None
    if result and result.status == "fail":
        known = PROFILE.known_failure(kernel_test, kernel.tree.series, drivers.thp_mode(hmm.ssh))
    drivers.verdict(result, output, kernel_test, known)


def test_kernel_selftest_list_matches_the_program(hmm, hmm_tests, kernel, request):
    """The tests collected from hmm-tests.c are exactly those the built program lists (-l)."""
    if not drivers.runs_one_test(kernel.tree.path):
        pytest.skip("this tree's kselftest_harness.h has no -l: its tests are known from the run itself")
    listed = ktap.harness_list(hmm.run(["sh", "-c", '"$0" -l 2>&1', hmm_tests]).stdout)
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
def mirror(hmm, kernel) -> tuple[dict, list[observe.Event]]:
    """Run hmm_mirror once: its report (steps by op) and the probe's events for its process."""
    program = drivers.install(hmm.ssh, userprogs.kprogram(kernel.build, "hmm_mirror"))
    _, info = hmm.program(program.rsplit("/", 1)[1])
    events = hmm.probe.events(pid=info["pid"])
    hmm.save("hmm_mirror.json", json.dumps(info, indent=1))
    hmm.save("events.json", observe.dump_events(events))
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
    if known := PROFILE.known_failure(request.node.name, kernel.tree.series):
        request.applymarker(pytest.mark.xfail(reason=f"known kernel bug: {known}", strict=False))
    info, _ = mirror
    first, count, _, _ = STEPS[op]
    device = info["by_op"][op]["device"]
    assert device[first + count] == 1, (
        f"after {op} over pages [{first}, {first + count}) the device dropped page {first + count} too: {device}")
