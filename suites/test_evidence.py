"""The model driver policy of docs/evidence.md, held to what it claims: context mode skips exactly the
invalidations that cannot affect a read-only mirror, never one that moves a page, and frees its
per-range tracking only for UNMAP/RELEASE. Counters come from the probe's "mirror" debugfs file
(guest/probe/mmu_probe.c); the workloads are guest/programs/ev_mirror.c, small and few iterations.

"stale" is the safety check: after every operation the mirrored process asks the probe to compare
the frames a still-valid mirror holds with the frames the process maps; a mismatch is a device
reading memory the process no longer has. The "unsafe" mode (skips everything) shows it can fail.

The model is held against a real in-tree mirror: lib/test_hmm.c's device runs the same workloads
(guest/kprograms/ev_hmm.c) and must pay exactly the model's blind re-faults, for invalidations the
context mode skipped.
"""

from __future__ import annotations

import json

import pytest

from harness.checks import drivers
from harness.checks.evidence import BY_NAME, prepare_hmm, run_hmm_workload, run_workload
from harness.checks.workloads import GuestSetup, Unavailable

# fresh_guest: test_hmm loaded, an ext2 mount on zram; counts read against a guest no other suite used
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.fresh_guest(scope="module")]

PAGES, ITERS = 32, 4


@pytest.fixture
def setup(guest):
    s = GuestSetup(guest.ssh)
    yield s
    s.restore()


def run(guest, setup, name: str, mode: str, pages: int = PAGES, iters: int = ITERS) -> dict:
    w = BY_NAME[name]
    try:
        for need in w.needs:
            setup.provide(need)
    except Unavailable as e:
        pytest.fail(f"the evidence kernel should provide {w.needs}: {e}")
    info = run_workload(guest.ssh, w, mode, pages, iters)
    guest.save(f"{name}-{mode}.txt", info["mirror"] + "\n")
    return info["counters"] | {"frames_changed": info["frames_changed"], "changed_iters": info["changed_iters"]}


def test_writeback_ro_blind_acts_on_every_protection_page(guest, setup):
    c = run(guest, setup, "writeback-ro", "blind")
    # msync after writing every page: mm/rmap.c:page_vma_mkclean_one, one PROTECTION_PAGE per page
    assert c["events"] == {"PROTECTION_PAGE": {"received": PAGES * ITERS, "skipped": 0}}, c
    assert (c["acted"], c["skipped"], c["refaults"]) == (PAGES * ITERS, 0, ITERS), c
    assert c["tracking_allocs"] == ITERS + 1, "blind cannot tell a write-protect from an unmap: frees every time"
    assert c["stale"] == 0, c


def test_writeback_ro_context_skips_them_all(guest, setup):
    c = run(guest, setup, "writeback-ro", "context")
    assert c["received"] == PAGES * ITERS, c
    assert (c["acted"], c["skipped"], c["refaults"], c["faults"]) == (0, PAGES * ITERS, 0, 1), c
    assert (c["tracking_frees"], c["tracking_allocs"]) == (0, 1), c
    assert c["stale"] == 0 and c["verifies"] == ITERS, c


@pytest.mark.parametrize("name", ["writeback-rw", "mprotect-rw"])
def test_rw_mirror_context_skips_no_protection_event(guest, setup, name):
    c = run(guest, setup, name, "context")
    assert c["received"] > 0, c
    assert c["skipped"] == 0 and c["acted"] == c["received"], f"a read-write mirror must drop write access: {c}"
    assert c["refaults"] == ITERS, c
    assert c["stale"] == 0, c


@pytest.mark.parametrize("name, event, per_iter", [
    ("softdirty-ro", "SOFT_DIRTY", 1),        # fs/proc/task_mmu.c:clear_refs_write, [0, ULONG_MAX)
    ("mprotect-ro", "PROTECTION_VMA", 2),     # mm/mprotect.c:change_pmd_range, RO then RW
    ("fork-ro", "PROTECTION_PAGE", 1),        # mm/memory.c:copy_page_range, one per COW VMA
])
def test_ro_protection_events(guest, setup, name, event, per_iter):
    blind = run(guest, setup, name, "blind")
    ctx = run(guest, setup, name, "context")
    want = {event: {"received": per_iter * ITERS, "skipped": 0}}
    assert blind["events"] == want and blind["refaults"] == ITERS, blind
    assert ctx["events"] == {event: {"received": per_iter * ITERS, "skipped": per_iter * ITERS}}, ctx
    assert (ctx["acted"], ctx["refaults"]) == (0, 0), ctx
    assert blind["stale"] == ctx["stale"] == 0


def test_unmap_frees_tracking_clear_keeps_it(guest, setup):
    unmap = run(guest, setup, "munmap-ro", "context")
    clear = run(guest, setup, "dontneed-ro", "context")
    clear_blind = run(guest, setup, "dontneed-ro", "blind")
    # munmap: mm/vma.c -> unmap_vmas: UNMAP; the range is gone, so the tracking goes with it
    assert unmap["events"] == {"UNMAP": {"received": ITERS, "skipped": 0}}, unmap
    assert (unmap["tracking_frees"], unmap["tracking_allocs"]) == (ITERS, ITERS + 1), unmap
    # MADV_DONTNEED: mm/memory.c:zap_page_range_single: CLEAR; torn down, tracking kept
    assert clear["events"] == {"CLEAR": {"received": ITERS, "skipped": 0}}, clear
    assert clear["refaults"] == ITERS, clear
    assert (clear["tracking_frees"], clear["tracking_allocs"]) == (0, 1), clear
    assert (clear_blind["tracking_frees"], clear_blind["tracking_allocs"]) == (ITERS, ITERS + 1), clear_blind


@pytest.mark.parametrize("name", ["fork-cow-ro", "munmap-ro", "dontneed-ro"])
def test_context_tears_down_when_frames_change(guest, setup, kernel, name):
    c = run(guest, setup, name, "context")
    # Every iteration must move frames, or a teardown would prove nothing. Not every page must: on 7.3 one
    # page per iteration of munmap-ro and dontneed-ro gets its old frame back (4 of 128, 2026-11-28). 7.3
    # frees the emptied page-table page on both paths (CONFIG_PT_RECLAIM, mm/pt_reclaim.c, and
    # MMU_GATHER_RCU_TABLE_FREE; 6.12 has neither), which changes the order freed frames come back from the
    # per-CPU lists; the exact pairing is not proven. Without PT_RECLAIM (6.12, 6.1) every page must move.
    assert c["changed_iters"] == ITERS and c["frames_changed"] >= ITERS, c
    if not kernel.build.has("PT_RECLAIM"):
        assert c["frames_changed"] == PAGES * ITERS, c
    assert c["refaults"] == ITERS, f"every frame change must tear the mirror down: {c}"
    assert c["stale"] == 0, f"a read-only mirror was left at a stale frame: {c}"
    if name == "fork-cow-ro":  # the fork's PROTECTION_PAGE is skipped, the COW copies' CLEARs are not
        # mm/memory.c:wp_page_copy: CLEAR for each page copied while the child shares it
        assert c["events"]["CLEAR"] == {"received": PAGES * ITERS, "skipped": 0}, c
        assert c["events"]["PROTECTION_PAGE"] == {"received": ITERS, "skipped": ITERS}, c


@pytest.mark.test_timeout(600)
def test_context_tears_down_on_compaction(guest, setup):
    # 32768 pages, 1 in 16 kept; the mirror covers the first 4096 (the probe's cap)
    c = run(guest, setup, "compaction-ro", "context", pages=32768, iters=2)
    if not c["frames_changed"]:
        pytest.skip("compaction moved no mirrored page this time: nothing to check")
    assert c["events"].get("CLEAR", {}).get("skipped", 1) == 0 and c["acted"] > 0, c
    assert c["stale"] == 0, f"compaction moved pages under a mirror that stayed valid: {c}"


@pytest.mark.parametrize("name", ["fork-cow-ro", "munmap-ro"])
def test_unsafe_policy_is_caught(guest, setup, name):
    c = run(guest, setup, name, "unsafe")
    assert c["acted"] == 0 and c["refaults"] == 0, c
    assert c["stale"] > 0, f"verify did not notice a mirror left at old frames: {c}"


@pytest.fixture
def ev_hmm(guest, kernel) -> str:
    """test_hmm loaded and ev_hmm (built against this tree) in the guest: its path there."""
    drivers.require_config(kernel.build, *drivers.load_driver("test_hmm").config)
    return prepare_hmm(guest.ssh, kernel.build)


@pytest.mark.parametrize("name", ["mprotect-ro", "writeback-ro"])
def test_test_hmm_refaults_what_context_skips(guest, setup, ev_hmm, name):
    """lib/test_hmm.c's device, on the same workload, re-faults exactly as often as the model's blind mode,
    although context mode shows every one of those invalidations could have been skipped."""
    blind = run(guest, setup, name, "blind")
    ctx = run(guest, setup, name, "context")
    hmm = run_hmm_workload(guest.ssh, BY_NAME[name], ev_hmm, PAGES, ITERS)
    guest.save(f"{name}-test_hmm.json", json.dumps(hmm, indent=1))
    assert ctx["received"] > 0 and ctx["skipped"] == ctx["received"] and ctx["refaults"] == 0, ctx
    assert ctx["stale"] == 0, ctx
    assert blind["refaults"] == ITERS, blind
    # lib/test_hmm.c:dmirror_interval_invalidate drops the device's entries for every event but its own
    # MIGRATE; dmirror_read then faults them back in (cmd->faults++): one round per access, nothing racing.
    assert hmm["first_faults"] == 1, hmm
    assert hmm["faulted_accesses"] == blind["refaults"], f"test_hmm {hmm}, model blind {blind}"
    assert hmm["faults"] == hmm["faulted_accesses"], hmm
    assert hmm["warm_faults"] == 0, f"the device lost pages with no operation in between: {hmm}"
    assert hmm["mismatched"] == 0, f"the device read other bytes than the CPU: {hmm}"


# The two-pass interval notifier (7.x) changes when a device waits for its flush, not what it must tear down:
# the model mirror in two passes (twopass: blind's policy, guest/probe/mmu_probe.c) must receive and act on
# the same events as blind, re-fault as often, and finish every start (mm/mmu_notifier.c:mn_itree_invalidate
# calls the finishes after every start, inside the same invalidate_range_start).
@pytest.mark.needs_two_pass
@pytest.mark.parametrize("name", ["writeback-ro", "mprotect-ro", "fork-cow-ro", "munmap-ro", "dontneed-ro"])
def test_two_pass_mirror_pays_what_blind_pays(guest, setup, name):
    blind, two = run(guest, setup, name, "blind"), run(guest, setup, name, "twopass")
    assert two["events"] == blind["events"], f"twopass {two}, blind {blind}"
    assert (two["acted"], two["refaults"]) == (blind["acted"], blind["refaults"]), f"twopass {two}, blind {blind}"
    assert two["starts"] == two["finishes"] == two["received"] and two["inline"] == 0, two
    assert (two["mapped_between"], two["seq_errors"], two["stale"]) == (0, 0, 0), two
