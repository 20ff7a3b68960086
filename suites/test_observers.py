"""The observers themselves: a kprobe on __mmu_notifier_invalidate_range_start (no module) must see what
the probe module's notifier sees, and the probe module must unload cleanly with subscriptions alive.
"""

from __future__ import annotations

import pytest

from harness.observe import kprobe, probe

pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier]

ULONG_MAX = (1 << 64) - 1

# Deterministic, single-threaded workloads: every invalidation of their mm is caused by themselves.
WORKLOADS = [("munmap", "partial"), ("mprotect", "rw-ro"), ("mremap", "fixed"), ("madvise", "dontneed"),
             ("fork", "private")]


@pytest.fixture
def kprobe_observer(guest, kernel):
    observer = kprobe.KprobeObserver(guest.ssh, kprobe.range_layout(kernel.build))
    observer.install()
    yield observer
    observer.remove()


@pytest.mark.parametrize("program,case", WORKLOADS)
def test_kprobe_sees_what_the_notifier_sees(guest, kernel, kprobe_observer, program, case):
    names = kprobe.event_names(kernel.build)
    guest.probe.clear()
    kprobe_observer.clear()
    _, info = guest.program(program, case)
    pid = info["pid"]
    events = guest.probe.events(pid=pid)
    all_hits = kprobe_observer.hits()
    hits = [h for h in all_hits if h.pid == pid]
    guest.save("events.json", probe.dump_events(events))
    guest.save("kprobe.txt", "\n".join(map(str, hits)) + "\n")
    seen_by_probe = [(e.event, e.start, e.end, e.flags) for e in events if e.kind == "start"]
    seen_by_kprobe = [(h.named(names), h.start, h.end, h.flags) for h in hits]
    # The kprobe sees one more: exit's unmap_vmas(0, ULONG_MAX) (mm/mmap.c:exit_mmap). The classic
    # notifier was unhooked by mmu_notifier_release just before it, but the mm still has its
    # subscriptions structure (freed at mmdrop), so mm_has_notifiers() still calls the function.
    # For fork, the child's mm has no subscriber (not inherited): none of its invalidations reach it.
    expected = [*seen_by_probe, ("UNMAP", 0, ULONG_MAX, 1)]
    assert seen_by_kprobe == expected, (
        f"kprobe ({kprobe_observer.line}) and the probe module disagree for pid {pid}:\n"
        f"  kprobe: {seen_by_kprobe}\n  probe + exit: {expected}")
    assert all(h.mm == hits[0].mm for h in hits), "one process, one mm"
    if "child" in info:
        assert not [h for h in all_hits if h.pid == info["child"]], "the child's mm has no subscriber"


@pytest.mark.fresh_guest  # unloads and reloads mmu_probe, which every other test reads
def test_probe_unloads_cleanly_with_subscriptions_alive(guest):
    guest.probe.clear()
    guest.program("exit")  # leaves a classic and an interval subscription on an exited mm
    sleeper = int(guest.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 </dev/null & echo $!"], check=True)
                  .stdout.strip())
    try:
        guest.probe.watch(sleeper)
        guest.probe.watch_range(sleeper, 0x10000, 0x7FFF_FFFF_0000)
        counters = guest.probe.counters()
        guest.save("counters-before-rmmod.txt", "\n".join(f"{k} {v}" for k, v in counters.items()) + "\n")
        assert (counters["subscriptions"], counters["interval_subscriptions"]) == (2, 2), counters
        assert counters["open"] == 0 and counters["unmatched_ends"] == 0, counters
        rmmod = guest.run(["rmmod", "mmu_probe"])
        assert rmmod.ok, rmmod.describe()
        assert not guest.run(["test", "-e", probe.PROBE_DIR]).ok, "debugfs files outlive the module"
        assert "mmu_probe" not in guest.run(["cat", "/proc/modules"], check=True).stdout
        # The sleeper's exit must not call into the unloaded module's notifiers.
        guest.run(["kill", str(sleeper)], check=True)
        guest.run(["sh", "-c", f"while kill -0 {sleeper} 2>/dev/null; do sleep 0.1; done"], check=True, timeout=30)
    finally:
        guest.run(["kill", str(sleeper)])
        if not guest.run(["test", "-d", probe.PROBE_DIR]).ok:
            guest.run(["insmod", "/guest/modules/mmu_probe.ko"], check=True)
    counters = guest.probe.counters()
    assert counters["recorded"] == 0 and counters["subscriptions"] == 0, f"a fresh module starts empty: {counters}"
    assert "mmu_probe: unloaded" in guest.dmesg.since_mark()
