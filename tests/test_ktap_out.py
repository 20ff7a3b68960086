"""`harness run --ktap`: our results as KTAP v1, read back with the parser the harness uses for the kernel's own
selftests (harness/observe/ktap.py), so that a kselftest-style runner sees what we saw."""

from __future__ import annotations

from harness.observe import ktap as ktap_in
from harness.results import ktap
from harness.results.model import Result
from harness.results.outcome import Outcome

RESULTS = [
    Result("suites/test_notifier_events.py::test_munmap_sends_one_unmap_covering_the_range", Outcome.PASS),
    Result("suites/test_events.py::test_events_match_the_kernel_source[mprotect/rw-ro]", Outcome.FAIL,
           "expected PROTECTION_VMA,\n saw CLEAR"),
    Result("suites/test_mm_selftests.py::test_mremap", Outcome.XFAIL, "needs 2 GB (mm/util.c:__vm_enough_memory)"),
    Result("suites/test_hmm.py::test_hmm_tests", Outcome.SKIP, "CONFIG_MMU_NOTIFIER is not set in this kernel"),
    Result("suites/test_kvm.py::test_guest", Outcome.CRASH, "kernel panic: Fatal exception"),
    Result("suites/test_kvm.py::test_second", Outcome.INFRA, "guest unreachable"),
]


def test_ktap_reads_back():
    text = ktap.render(RESULTS, "results in /r")
    assert text.startswith("KTAP version 1\n1..6\n# results in /r\n")
    run = ktap_in.parse(text)
    assert run.version == "1" and run.plan == 6 and run.complete
    got = [(r.number, r.name, r.status) for r in run.results]
    assert got == [(1, "mmu_notifier.notifier_events.munmap_sends_one_unmap_covering_the_range", "pass"),
                   (2, "mmu_notifier.events.events_match_the_kernel_source_mprotect_rw-ro", "fail"),
                   (3, "mmu_notifier.mm_selftests.mremap", "xfail"),
                   (4, "mmu_notifier.hmm.hmm_tests", "skip"),
                   (5, "mmu_notifier.kvm.guest", "fail"),
                   (6, "mmu_notifier.kvm.second", "fail")]
    reasons = {r.number: r.reason for r in run.results}
    assert reasons[2] == "FAIL expected PROTECTION_VMA, saw CLEAR", "a reason stays on its result line"
    assert reasons[3].startswith("needs 2 GB") and reasons[4].startswith("CONFIG_MMU_NOTIFIER")
    assert reasons[5] == "CRASH kernel panic: Fatal exception" and reasons[6] == "INFRA guest unreachable"
    assert run.totals == {"pass": 1, "fail": 1, "xfail": 1, "xpass": 0, "skip": 1, "error": 2}


def test_no_results_is_an_empty_plan():
    run = ktap_in.parse(ktap.render([]))
    assert run.plan == 0 and run.complete and run.results == []
