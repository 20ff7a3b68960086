import pytest

from harness.observe.pagemap import PRESENT, SOFT_DIRTY, SWAPPED, moved_pages, parse, uncovered_moves
from harness.results.events import Event

PAGE = 4096
BASE = 0x7F0000000000


def present(pfn: int, extra: int = 0) -> int:
    return PRESENT | extra | pfn


def test_entry_fields():
    # A real entry from the guest (a present, exclusively mapped, soft-dirty anonymous page).
    (e,) = parse([9331458427911928694])
    assert e.present and e.soft_dirty and e.exclusive and not e.swapped
    assert e.pfn == 9331458427911928694 & ((1 << 55) - 1)
    (s,) = parse([SWAPPED | 0x1234])
    assert s.swapped and not s.present and s.pfn is None
    assert parse([present(5, SOFT_DIRTY)])[0].soft_dirty


def test_entry_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="64-bit"):
        parse([1 << 64])


def test_moved_pages_with_stride():
    before = [present(10), present(11), 0, present(13)]
    after = [present(10), present(99), present(12), present(77)]
    moves = moved_pages(BASE, PAGE, before, after, stride=16)
    assert [(m.addr, m.old_pfn, m.new_pfn) for m in moves] == [
        (BASE + 16 * PAGE, 11, 99), (BASE + 48 * PAGE, 13, 77)]  # the page absent before is not a move


def test_hidden_frames_are_an_error_not_a_pass():
    # Without CAP_SYS_ADMIN the kernel zeroes the PFN bits: that must not read as "nothing moved".
    with pytest.raises(ValueError, match="CAP_SYS_ADMIN"):
        moved_pages(BASE, PAGE, [PRESENT], [PRESENT])


def test_snapshots_of_different_length():
    with pytest.raises(ValueError, match="length"):
        moved_pages(BASE, PAGE, [present(1)], [])


def test_uncovered_moves_needs_a_start_in_the_window_covering_the_page():
    moves = moved_pages(BASE, PAGE, [present(1), present(2), present(3)], [present(4), present(5), present(6)])
    events = [
        Event(4, 1, 1, "start", "CLEAR", BASE, BASE + PAGE),  # covers page 0
        Event(5, 1, 1, "end", "CLEAR", BASE + PAGE, BASE + 2 * PAGE),  # an end is not an invalidation start
        Event(1, 1, 1, "start", "CLEAR", BASE + 2 * PAGE, BASE + 3 * PAGE),  # before the window
        Event(6, 1, 1, "start", "CLEAR", BASE + 2 * PAGE + 1, BASE + 3 * PAGE),  # misses the page's first byte
    ]
    missed = uncovered_moves(moves, events, PAGE, seq_before=2, seq_after=10)
    assert [m.addr for m in missed] == [BASE + PAGE, BASE + 2 * PAGE]


def test_interval_invalidations_count_too():
    moves = moved_pages(BASE, PAGE, [present(1)], [present(2)])
    itv = Event(3, 1, 1, "invalidate", "CLEAR", 0, 1 << 64, sub="itv")
    assert uncovered_moves(moves, [itv], PAGE, 0, 10) == []
