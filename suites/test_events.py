"""mmu_notifier events of real workloads, checked against what the kernel's mm/ says they must be.

Each case of configs/expectations/events.yaml runs one guest program (guest/programs/) with the probe
module's classic notifier on its mm (and, for exit, an interval notifier on a range). The expected
events, with the mm/ call site of each, are read from the source of the kernel under test, never
from output; harness/checks/expectations.py compares. Every run is also held to the notifier contract: each
start has its end, one release at exit, nothing after it.

Workloads whose events are not deterministic say so and assert what is:
  - KSM (madvise/mergeable): ksmd merges on its own schedule; every merged page must have been
    invalidated, and every page whose frame changed covered (pagemap before/after).
  - compaction: the kernel picks the pages; every page whose frame changed must have been covered by
    an invalidation in the window around the compaction. Migration between NUMA nodes, the same
    check on a two-node machine, is in test_migration.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from harness.checks import expectations
from harness.checks.cases import Run, run_case
from harness.checks.workloads import GuestSetup, Unavailable
from harness.kernel.prepare import Prepared
from harness.observe import pagemap
from harness.results.compare import CHECKS_JSON

pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier]

ALL = expectations.load("")  # the case names; their content depends on the kernel, loaded per test
OWN_TEST = {"compaction/compact_memory"}
# A case with a setup (KSM's knobs, swap on zram, an ext2 mount) changes the guest for every test after it: it
# runs on a guest of its own (restored from the boot's snapshot: harness/vm/snapshot.py)
GENERIC = [pytest.param(n, marks=[pytest.mark.fresh_guest] if c.needs else []) for n, c in sorted(ALL.items())
           if n not in OWN_TEST and "numa" not in c.needs]


@pytest.fixture
def cases(kernel) -> dict[str, expectations.Case]:
    return expectations.load(kernel.tree.series)


@pytest.fixture
def setup(guest):
    s = GuestSetup(guest.ssh)
    yield s
    s.restore()


def provide(setup: GuestSetup, case: expectations.Case) -> None:
    for need in case.needs:
        try:
            setup.provide(need)
        except Unavailable as e:
            pytest.skip(f"{case.name}: {e}")


def uncovered(run: Run, stride: int = 1) -> list[str]:
    """Pages whose frame changed between the program's two pagemap snapshots with no invalidation of them
    among the probe's records in between: the completeness check."""
    info = run.info
    start = info["ranges"]["target"][0]
    moves = pagemap.moved_pages(start, info["page_size"], info["pagemap_before"], info["pagemap_after"], stride)
    missed = pagemap.uncovered_moves(moves, run.events, info["page_size"], info["seq_before"], info["seq_after"])
    return [f"page {m.addr:#x} moved from pfn {m.old_pfn:#x} to {m.new_pfn:#x} with no invalidation covering it "
            f"among records {info['seq_before']}..{info['seq_after']}" for m in missed]


def pageout_checks(run: Run) -> list[str]:
    # The count expectation (one CLEAR per page) holds only if reclaim took every page.
    pages = (run.info["ranges"]["target"][1] - run.info["ranges"]["target"][0]) // run.info["page_size"]
    if run.info["swapped"] != pages:
        return [f"MADV_PAGEOUT swapped {run.info['swapped']} of {pages} pages (pagemap): reclaim skipped some"]
    return []


def ksm_checks(run: Run) -> list[str]:
    info = run.info
    page_size = info["page_size"]
    start, end = info["ranges"]["target"]
    n = (end - start) // page_size
    if info["merged"] != n:
        return [f"KSM merged {info['merged']} of {n} identical pages within the program's wait"]
    after = pagemap.parse(info["pagemap_after"])
    frames = {e.pfn for e in after}
    out = [] if len(frames) == 1 else [f"merged pages should share one frame, pagemap shows {len(frames)}"]
    clears = [e for e in expectations.invalidations(run.events) if e.event == "CLEAR"]
    for i in range(n):
        addr = start + i * page_size
        if not any(e.start <= addr and addr + page_size <= e.end for e in clears):
            out.append(f"merged page {addr:#x} was never invalidated (mm/ksm.c:write_protect_page)")
    return out + uncovered(run)


def softdirty_checks(run: Run, kernel: Prepared) -> list[str]:
    # clear_refs 4 clears the soft-dirty bits (and VM_SOFTDIRTY); the writes after it set them again. Without
    # CONFIG_MEM_SOFT_DIRTY (arm64 does not select HAVE_ARCH_SOFT_DIRTY, in 6.12 or 7.3) the SOFT_DIRTY event is
    # still sent (fs/proc/task_mmu.c:clear_refs_write tests the type, not the config), but no bit is ever set:
    # pte_soft_dirty() is 0 (include/linux/pgtable.h) and VM_SOFTDIRTY is 0 (include/linux/mm.h).
    info = run.info
    rewritten = (info["ranges"]["rewritten"][1] - info["ranges"]["rewritten"][0]) // info["page_size"]
    bits = [e.soft_dirty for e in pagemap.parse(info["pagemap"])]
    if not kernel.build.has("MEM_SOFT_DIRTY"):
        rewritten = 0
    want = [True] * rewritten + [False] * (len(bits) - rewritten)
    return [] if bits == want else [f"soft-dirty bits after clear_refs and rewrite: {bits}, expected {want}"]


def guard_checks(run: Run) -> list[str]:
    # The events alone cannot tell a guard that was installed with no invalidation from one never
    # installed: the program reads every target page afterwards and counts the ones that fault.
    pages = (run.info["ranges"]["target"][1] - run.info["ranges"]["target"][0]) // run.info["page_size"]
    want = 0 if run.info["case"] == "remove" else pages
    if run.info["guarded"] != want:
        return [f"{run.info['guarded']} of the {pages} target pages fault (SIGSEGV) after the advice, expected {want}"]
    return []


EXTRA_CHECKS: dict[str, Callable[[Run, Prepared], list[str]]] = {
    "madvise/pageout": lambda run, _: pageout_checks(run),
    "madvise/mergeable": lambda run, _: ksm_checks(run),
    "softdirty/clear_refs": softdirty_checks,
    **{name: lambda run, _: guard_checks(run) for name in ALL if name.startswith("guard/")},
}


@pytest.mark.parametrize("name", GENERIC)
def test_events_match_the_kernel_source(guest, kernel, cases, setup, name):
    case = cases[name]
    if reason := case.unavailable(kernel.tree.series):
        pytest.skip(reason)
    provide(setup, case)
    run = run_case(guest, case)
    extra = EXTRA_CHECKS.get(name, lambda _run, _kernel: [])(run, kernel)
    guest.save(CHECKS_JSON, json.dumps(run.checks(extra), indent=1))
    assert not run.problems() and not extra, run.report(extra)


@pytest.mark.needs_two_pass
def test_exit_takes_both_passes_of_a_two_pass_interval_notifier(guest, cases):
    """exit/exit with its interval notifier in two passes (7.x): the same events, each one a start pass (RELEASE
    from mm/mmu_notifier.c:mn_itree_release, exit_mmap's UNMAP from mn_itree_invalidate), and each start
    finished: both call mn_itree_finish_pass() before they return."""
    run = run_case(guest, cases["exit/exit"], "--two-pass", save_as="two-pass")
    assert not run.problems(), run.report()
    k, itv = run.counters, [e for e in run.events if e.sub == "itv"]
    assert len(itv) == 2 and k["itv_starts"] == len(itv), f"{itv}\n{k}"  # RELEASE, then UNMAP
    assert (k["itv_finishes"], k["itv_inline"]) == (k["itv_starts"], 0), k


def test_compaction_invalidates_every_page_it_moves(guest, cases):
    case = cases["compaction/compact_memory"]
    for attempt in range(1, 4):  # which pages compaction moves is up to it; retry until some did
        run = run_case(guest, case, save_as=f"try{attempt}")
        missed = uncovered(run, stride=run.info["stride"])
        assert not run.problems() and not missed, f"attempt {attempt}: {run.report(missed)}"
        info = run.info
        moved = pagemap.moved_pages(info["ranges"]["target"][0], info["page_size"], info["pagemap_before"],
                                    info["pagemap_after"], info["stride"])
        if moved:
            return
    pytest.fail("compaction moved none of the program's pages in 3 tries: there was nothing to check")
