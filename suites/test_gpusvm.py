"""GPU SVM, the common code of xe's shared virtual memory (drivers/gpu/drm/drm_gpusvm.c), driven by a GPU with no
hardware: the harness's guest/gpusvm/gpusvm_device.c, system memory only, linked against the tree's own library
(configs/drivers/gpusvm.yaml says how it is built; the tests skip on trees without 7.3's GPU SVM API).

The driver does what the library's DOC examples do: every invalidation DMA-unmaps the ranges it covers, and
MMU_NOTIFY_UNMAP alone also marks them unmapped for the garbage collector. So the event is what decides whether
a range is destroyed or only refaulted, and these tests check both halves:
  - the events: each operation reaches GPU SVM's notifier with the event and range mm/ gives it, the same
    invalidations (event and range) the probe's classic notifier saw on the same mm at the same time;
  - what the driver did with them: only the ranges an invalidation covered lost their pages; an UNMAP's ranges
    were marked unmapped (partially, when it covered part of one) and gone after the next fault, the others
    kept and refaulted; and the device then read what the CPU reads, byte for byte.
The races: the device faulting its ranges (drm_gpusvm_get_pages, then a bind that checks
drm_gpusvm_pages_valid under the notifier lock) while another CPU changes them, with the retries counted;
and negative controls: a device that binds without drm_gpusvm_pages_valid(), and one that ignores
invalidations, must both be caught reading old frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from harness.checks import drivers
from harness.kernel import userprogs
from harness.kernel.build import BuildError
from harness.kernel.guest_modules import build_gpusvm_modules, gpusvm_unavailable
from harness.observe.kprobe import TRACEFS

PROFILE = drivers.load_driver("gpusvm")
# fresh_guest: the modules loaded and a kprobe event added, for these tests alone
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.machine(PROFILE.machine),
              pytest.mark.fresh_guest(scope="module")]
DEBUGFS = "/sys/kernel/debug/gpusvm_mirror"
NOTIFIER_SIZE = 512 << 20  # gpusvm_device.c's drm_gpusvm_init(): one interval notifier per 512 MiB, aligned

# What mm/ sends for each operation of guest/kprograms/gpusvm_steps.c (7.3.4's lines), over exactly the pages
# it names: every one of them has present pages, and the VMA is split at the operation's bounds first.
EXPECTED_EVENT = {
    "mprotect": "PROTECTION_VMA",  # mm/mprotect.c:601, change_pud_range()
    "dontneed": "CLEAR",  # mm/madvise.c:870 -> mm/memory.c:2342, zap_vma_range_batched()
    "munmap_part": "UNMAP",  # mm/vma.c:532 unmap_vmas() -> mm/memory.c:2301
    "munmap_whole": "UNMAP",
}


@dataclass(frozen=True)
class Record:
    """One line of debugfs gpusvm_mirror/events: an invalidation the driver's callback got."""
    seq: int
    pid: int
    event: str
    start: int
    end: int
    ranges: int
    unmapped: int
    partial: int


def parse_records(text: str) -> list[Record]:
    out = []
    for line in text.splitlines():
        f = dict(token.split("=", 1) for token in line.split())
        out.append(Record(int(f["seq"]), int(f["pid"]), f["event"], int(f["start"], 0), int(f["end"], 0),
                          int(f["ranges"]), int(f["unmapped"]), int(f["partial"])))
    return out


@dataclass(frozen=True)
class Range:
    start: int
    end: int
    valid: bool
    unmapped: bool
    partial: bool

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


def ranges(rows: list[list[int]]) -> list[Range]:
    return [Range(s, e, bool(v), bool(u), bool(p)) for s, e, v, u, p in rows]


@pytest.fixture
def gpusvm(guest, kernel):
    """The guest with drm_gpusvm_helper and gpusvm_mirror loaded; a skip naming why on a kernel without them."""
    if reason := gpusvm_unavailable(kernel.build):
        pytest.skip(reason)
    drivers.require_config(kernel.build, *PROFILE.config)
    try:
        build_gpusvm_modules(kernel.build)  # cached: the image has them unless they failed to build
    except BuildError as e:
        pytest.fail(f"guest/gpusvm does not build against this tree: {e}")
    drivers.load_module(guest.ssh, PROFILE)
    return guest


def step_problems(step: dict, records: list[Record], probe_starts: list) -> list[str]:
    """Everything a step of gpusvm_steps must show, by what mm/ and the library say; empty when it did."""
    op, start, end = step["op"], step["start"], step["end"]
    out = []
    got = [(r.event, r.start, r.end) for r in records]
    want = [] if op == "bind" else [(EXPECTED_EVENT[op], start, end)]
    if got != want:
        out.append(f"{op}: GPU SVM's notifier got {got}, mm/ sends {want}")
    notifier = (start & ~(NOTIFIER_SIZE - 1), (start & ~(NOTIFIER_SIZE - 1)) + NOTIFIER_SIZE)
    seen = [(e.event, e.start, e.end) for e in probe_starts if e.start < notifier[1] and notifier[0] < e.end]
    if seen != got:
        out.append(f"{op}: the probe's classic notifier saw {seen} over GPU SVM's interval, GPU SVM got {got}")
    after_op = ranges(step["ranges_after_op"])
    for r in after_op:
        covered = r.overlaps(start, end) and op != "bind"
        if r.valid == covered:
            out.append(f"{op}: range {r.start:#x}-{r.end:#x} {'kept' if r.valid else 'lost'} its pages "
                       f"({'covered' if covered else 'not covered'} by the invalidation)")
        unmap = covered and EXPECTED_EVENT.get(op) == "UNMAP"
        partial = unmap and not (start <= r.start and r.end <= end)
        if (r.unmapped, r.partial) != (unmap, partial):
            out.append(f"{op}: range {r.start:#x}-{r.end:#x} unmapped={r.unmapped} partial={r.partial}, expected "
                       f"{unmap} and {partial}")
    after_read = ranges(step["ranges_after_read"])
    if any(r.unmapped or not r.valid for r in after_read):
        out.append(f"{op}: after the device's read, ranges not valid or still unmapped: {after_read}")
    if op.startswith("munmap") and any(r.overlaps(start, end) for r in after_read):
        out.append(f"{op}: a range over the unmapped pages survived the garbage collector: {after_read}")
    # The device faults exactly the ranges it lacks: new ones, and those that lost their pages. A range the
    # invalidation did not cover is never faulted again (retries, none on a quiet guest, fault twice).
    kept = {(r.start, r.end) for r in after_op if r.valid}
    faulted = [r for r in after_read if (r.start, r.end) not in kept]
    if step["faults"] - step["retries"] != len(faulted):
        out.append(f"{op}: {step['faults']} device faults ({step['retries']} retried), for {len(faulted)} ranges "
                   f"new or invalidated: {faulted}")
    if step["mismatched"]:
        out.append(f"{op}: the device read {step['mismatched']} of {step['read_pages']} pages other than the CPU")
    return out


def test_gpusvm_gets_each_event_and_acts_on_it(gpusvm, kernel):
    binary = drivers.install(gpusvm.ssh, userprogs.kprogram(kernel.build, "gpusvm_steps"))
    gpusvm.probe.clear()
    gpusvm.run(["sh", "-c", f"echo 1 > {DEBUGFS}/clear"], check=True)
    _, info = gpusvm.program(binary.rsplit("/", 1)[-1])
    records = parse_records(gpusvm.run(["cat", f"{DEBUGFS}/events"], check=True).stdout)
    probe = [e for e in gpusvm.probe.events(info["pid"]) if e.kind == "start"]
    gpusvm.save("gpusvm_steps.json", json.dumps(info | {"records": [r.__dict__ for r in records]}, indent=1))
    problems = []
    for step in info["steps"]:
        lo, hi = step["gsm"]
        plo, phi = step["probe"]
        problems += step_problems(step, [r for r in records if lo <= r.seq < hi],
                                  [e for e in probe if plo <= e.seq < phi])
    # 64 pages at a 2 MiB boundary in a VMA of their own: no 2 MiB chunk fits the VMA, four of 64 KiB do
    # (drm_gpusvm.c:drm_gpusvm_range_chunk_size, with gpusvm_device.c's chunks 2M, 64K, 4K)
    start = info["ranges"]["target"][0]
    want = [(start + i * (64 << 10), start + (i + 1) * (64 << 10)) for i in range(4)]
    got = [(r.start, r.end) for r in ranges(info["steps"][0]["ranges_after_read"])]
    assert got == want, f"the first read made ranges {got}, expected four of 64 KiB: {want}"
    assert not problems, "\n".join(problems)


# --- races ------------------------------------------------------------------------------------------------

KPROBE = "p:gpusvm/read_begin mmu_interval_read_begin"
CASES = ["munmap", "mprotect", "dontneed", "fork-cow"]
MOVES_FRAMES = ["munmap", "dontneed", "fork-cow"]  # as test_races.py: where a stale mapping reads old bytes


@pytest.fixture
def race_gpusvm(gpusvm, kernel, limit):
    """race_gpusvm installed and a kprobe counting mmu_interval_read_begin() (only GPU SVM's get_pages calls it
    here: with a check_pages_threshold of 0 find_or_insert never does); the runner of one race."""
    binary = drivers.install(gpusvm.ssh, userprogs.kprogram(kernel.build, "race_gpusvm"))
    gpusvm.run(["sh", "-c", f"cd {TRACEFS} && echo '{KPROBE}' >> kprobe_events && "
                            "echo 1 > events/gpusvm/read_begin/enable"], check=True)

    def race(case: str, mode: str, *extra: str) -> dict:
        before = read_begin_hits(gpusvm)
        _, info = gpusvm.program(binary.rsplit("/", 1)[-1], case, mode, *extra, *limit, timeout=240)
        # one mmu_interval_read_begin per get_pages call, and one more for each of its own retries
        info["read_begin_calls"] = calls = read_begin_hits(gpusvm) - before
        info["get_pages_retries"] = calls - info["faults"]
        gpusvm.save(f"race_gpusvm-{case}-{mode}.json", json.dumps(info, indent=1) + "\n")
        print(f"gpusvm {case} {mode}: retries {info['retries']} + {info['get_pages_retries']} in get_pages, "
              f"{info['faults']} faults, {info['accesses']} accesses (EFAULT {info['access_errors']}, EBUSY "
              f"{info['access_busy']}), {info['mismatched']} mismatched, {info['rounds']} rounds in "
              f"{info['elapsed_ms']} ms")
        return info

    yield race
    gpusvm.run(["sh", "-c", f"cd {TRACEFS} && echo 0 > events/gpusvm/read_begin/enable && "
                            "echo '-:gpusvm/read_begin' >> kprobe_events"])


@pytest.fixture
def limit(pytestconfig) -> list[str]:
    seconds = pytestconfig.getoption("race_seconds")
    return [f"--seconds={seconds}"] if seconds else []


def read_begin_hits(guest) -> int:
    out = guest.run(["cat", f"{TRACEFS}/kprobe_profile"], check=True).stdout
    (hits,) = [int(line.split()[1]) for line in out.splitlines() if line.split()[:1] == ["read_begin"]]
    return hits


@pytest.mark.parametrize("case", CASES)
def test_gpusvm_device_survives_the_race(race_gpusvm, case):
    info = race_gpusvm(case, "safe")
    assert info["cpus"][0] != info["cpus"][1], info["cpus"]
    assert info["get_pages_retries"] >= 0, f"fewer mmu_interval_read_begin() calls than get_pages calls: {info}"
    assert info["mismatched"] == 0, f"the device read other bytes than the CPU after a round: {info}"
    assert info["retries"] + info["get_pages_retries"] > 0, f"no device fault had to retry: never raced: {info}"


@pytest.mark.parametrize("case", MOVES_FRAMES)
def test_gpusvm_device_that_binds_without_pages_valid_is_caught(race_gpusvm, case):
    """Negative control: novalid commits a bind whose pages an invalidation took after get_pages; the device
    keeps that mapping of the old frames until the next invalidation, and the quiet verify must see it."""
    info = race_gpusvm(case, "novalid", "--rounds=40")
    assert info["retries"], f"no bind ever found its pages invalidated: this control shows nothing: {info}"
    assert info["mismatched"], f"a device that bound invalidated pages went unnoticed: {info}"


@pytest.mark.parametrize("case", ["munmap", "dontneed"])
def test_gpusvm_device_that_ignores_invalidations_is_caught(race_gpusvm, case):
    """Negative control: unsafe's callback does nothing, so its ranges stay valid on frames the CPU gave up."""
    info = race_gpusvm(case, "unsafe", "--rounds=5")
    assert info["mismatched"], f"a device that ignored every invalidation went unnoticed: {info}"
    assert not info["retries"], f"unsafe mode retried a bind: {info}"
