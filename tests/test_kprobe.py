import pytest

from harness.observe.kprobe import Hit, KprobeError, Layout, definition, parse_offsets, parse_trace

# What gcc leaves in offsets.s for OFFSETS_C, compiled against the 6.12 and 6.1 builds.
ASM_612 = """\
.ascii "->RANGE_mm $0 offsetof(struct mmu_notifier_range, mm)"	#
.ascii "->RANGE_start $8 offsetof(struct mmu_notifier_range, start)"	#
.ascii "->RANGE_end $16 offsetof(struct mmu_notifier_range, end)"	#
.ascii "->RANGE_flags $24 offsetof(struct mmu_notifier_range, flags)"	#
.ascii "->RANGE_event $28 offsetof(struct mmu_notifier_range, event)"	#
.ascii "->SIZE_flags $4 sizeof(((struct mmu_notifier_range *)0)->flags)"	#
.ascii "->SIZE_event $4 sizeof(((struct mmu_notifier_range *)0)->event)"	#
"""
ASM_61 = """\
.ascii "->RANGE_mm $8 offsetof(struct mmu_notifier_range, mm)"	#
.ascii "->RANGE_start $16 offsetof(struct mmu_notifier_range, start)"	#
.ascii "->RANGE_end $24 offsetof(struct mmu_notifier_range, end)"	#
.ascii "->RANGE_flags $32 offsetof(struct mmu_notifier_range, flags)"	#
.ascii "->RANGE_event $36 offsetof(struct mmu_notifier_range, event)"	#
.ascii "->SIZE_flags $4 sizeof(((struct mmu_notifier_range *)0)->flags)"	#
.ascii "->SIZE_event $4 sizeof(((struct mmu_notifier_range *)0)->event)"	#
"""

FUNC = "(__mmu_notifier_invalidate_range_start+0x0/0x15f)"
TRACE = f"""\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
          munmap-229     [000] .....   318.235842: range_start: {FUNC} mm=0xffff888000f517c0 \
start=0x7f2751004000 end=0x7f2751008000 flags=0x1 event=0
    trace-launch-12-31   [001] d..1.   318.239842: range_start: {FUNC} mm=0xffff888000f517c0 \
start=0x0 end=0xffffffffffffffff flags=0x1 event=5
           <...>-45      [000] .....   319.000001: sched_switch: prev_comm=x
"""


def test_layout_of_6_12_and_6_1():
    new, old = parse_offsets(ASM_612), parse_offsets(ASM_61)
    assert new.offsets == {"mm": 0, "start": 8, "end": 16, "flags": 24, "event": 28}
    assert old.offsets == {"mm": 8, "start": 16, "end": 24, "flags": 32, "event": 36}  # vma comes first in 6.1
    assert definition(old) == (
        "p:mmu_harness/range_start __mmu_notifier_invalidate_range_start mm=+8($arg1):x64 "
        "start=+16($arg1):x64 end=+24($arg1):x64 flags=+32($arg1):x32 event=+36($arg1):s32")


def test_missing_field_is_an_error():
    with pytest.raises(KprobeError, match="event"):
        parse_offsets("\n".join(line for line in ASM_612.splitlines() if "event" not in line))


def test_definition_follows_field_sizes():
    layout = Layout({"mm": 0, "start": 8, "end": 16, "flags": 24, "event": 32}, {"flags": 8, "event": 2})
    assert "flags=+24($arg1):x64" in definition(layout) and "event=+32($arg1):s16" in definition(layout)


def test_parse_trace_lines():
    hits = parse_trace(TRACE)
    assert len(hits) == 2  # comments and other events are skipped
    assert hits[0] == Hit("munmap", 229, 0, 318.235842, 0xFFFF888000F517C0, 0x7F2751004000, 0x7F2751008000, 1, 0)
    assert (hits[1].comm, hits[1].pid, hits[1].end) == ("trace-launch-12", 31, (1 << 64) - 1)  # dashes in comm


def test_event_names_from_the_tree_enum():
    names = ["MMU_NOTIFY_UNMAP", "MMU_NOTIFY_CLEAR"]
    hit = parse_trace(TRACE)[0]
    assert hit.named(names) == "UNMAP"
    assert parse_trace(TRACE)[1].named(names) == "5"  # unknown to this enum: the number


def test_malformed_hit_is_an_error():
    with pytest.raises(KprobeError, match="line 1"):
        parse_trace("  a-1 [000] ..... 1.000000: range_start: (f+0x0/0x1) mm=0x1 start=0x2 end=zz flags=0x1 event=0\n")
