"""Notifier events seen by the probe module for real user-space operations.

Expectations come from the kernel's own call sites, cited next to each assertion.
"""

from __future__ import annotations

import pytest

from harness.observe import probe

pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier]


def test_munmap_sends_one_unmap_covering_the_range(guest):
    # munmap -> mm/vma.c:vms_clear_ptes() (6.12; mm/mmap.c:unmap_region() in 6.1) -> mm/memory.c:
    # unmap_vmas(), which brackets the whole unmapped range with one MMU_NOTIFY_UNMAP start/end.
    _, info = guest.program("munmap")
    events = guest.probe.events(pid=info["pid"])
    guest.save("events.json", probe.dump_events(events))
    starts = [e for e in events if e.kind == "start"]
    assert info["probed"] == 1
    unmaps = [e for e in starts if e.event == "UNMAP"]
    assert len(unmaps) == 1, f"expected one UNMAP start for pid {info['pid']}, saw: {starts}"
    (ev,) = unmaps
    assert (ev.start, ev.end) == (info["start"], info["end"]), (
        f"UNMAP covers [{ev.start:#x}, {ev.end:#x}), the program unmapped [{info['start']:#x}, {info['end']:#x})")
    assert not probe.unpaired_starts(events), "every invalidate_range_start must have its end"
    # include/linux/mmu_notifier.h:mmu_notifier_invalidate_range_start() sets RANGE_BLOCKABLE (1).
    assert ev.flags & 1, "munmap invalidates from a context that may block (MMU_NOTIFIER_RANGE_BLOCKABLE)"
    # At exit, mm/mmap.c:exit_mmap() calls mmu_notifier_release() first, which unhooks the subscriber
    # (mm/mmu_notifier.c:mn_hlist_release), so exit's own unmap_vmas() is not seen: one release, no UNMAP.
    assert [e.kind for e in events].count("release") == 1
