from harness.observe.probe import parse_counters, parse_events, unpaired_starts
from harness.results.events import Event

SAMPLE = """\
seq=0 pid=120 cpid=120 kind=start event=UNMAP start=0x7f0000001000 end=0x7f0000011000 flags=0x1
seq=1 pid=120 cpid=120 kind=end event=UNMAP start=0x7f0000001000 end=0x7f0000011000 flags=0x1
seq=2 pid=120 cpid=45 kind=start event=MIGRATE start=0x7f0000002000 end=0x7f0000003000 flags=0x1
seq=3 pid=120 cpid=120 kind=release
"""


def test_parse_events_fields_and_types():
    events = parse_events(SAMPLE)
    assert [e.kind for e in events] == ["start", "end", "start", "release"]
    assert events[0] == Event(seq=0, pid=120, cpid=120, kind="start", event="UNMAP", start=0x7F0000001000,
                              end=0x7F0000011000, flags=1)
    assert events[2].cpid == 45
    assert events[3].event == "" and events[3].start == 0


def test_unpaired_starts_finds_the_start_without_end():
    events = parse_events(SAMPLE)
    assert [e.seq for e in unpaired_starts(events)] == [2]


def test_malformed_line_is_an_error_naming_the_line():
    try:
        parse_events("seq=0 pid=1 kind\n")
    except ValueError as e:
        assert "line 1" in str(e)
    else:
        raise AssertionError("malformed line accepted")


def test_covers():
    ev = Event(0, 1, 1, "start", "UNMAP", 0x1000, 0x5000)
    assert ev.covers(0x1000, 0x5000) and ev.covers(0x2000, 0x3000)
    assert not ev.covers(0x0, 0x2000)


def test_parse_counters():
    assert parse_counters("UNMAP 3\nstarts 4\n") == {"UNMAP": 3, "starts": 4}


def test_interval_records_and_sub_field():
    events = parse_events("seq=7 pid=5 cpid=5 sub=itv kind=invalidate event=RELEASE start=0x0 "
                          "end=0xffffffffffffffff flags=0x1\nseq=8 pid=5 cpid=5 sub=mn kind=release\n")
    assert (events[0].sub, events[0].kind, events[0].end) == ("itv", "invalidate", (1 << 64) - 1)
    assert events[1].sub == "mn"
    assert parse_events(SAMPLE)[0].sub == "mn"  # records of an older module default to the classic notifier


def test_orphan_ends_finds_the_end_without_start():
    from harness.observe.probe import orphan_ends

    events = parse_events(SAMPLE)
    assert orphan_ends(events) == []
    stray = Event(9, 120, 120, "end", "CLEAR", 0x1000, 0x2000, 1)
    assert orphan_ends([*events, stray]) == [stray]
    # An end matches a start of the same range only: one for a different range is an orphan too.
    assert orphan_ends([events[0], Event(1, 120, 120, "end", "UNMAP", 0x1000, 0x3000, 1)])[0].end == 0x3000
