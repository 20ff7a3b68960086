"""/proc/PID/pagemap entries (Documentation/admin-guide/mm/pagemap.rst), as guest programs print them,
and the completeness check built on them: a page whose frame changed must have been invalidated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.results.events import Event

PFN_MASK = (1 << 55) - 1
SOFT_DIRTY = 1 << 55
EXCLUSIVE = 1 << 56
FILE_OR_SHARED = 1 << 61
SWAPPED = 1 << 62
PRESENT = 1 << 63


@dataclass(frozen=True)
class Entry:
    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & PRESENT)

    @property
    def swapped(self) -> bool:
        return bool(self.raw & SWAPPED)

    @property
    def soft_dirty(self) -> bool:
        return bool(self.raw & SOFT_DIRTY)

    @property
    def exclusive(self) -> bool:
        return bool(self.raw & EXCLUSIVE)

    @property
    def pfn(self) -> int | None:
        """The frame of a present page (bits 0-54); None when not present or hidden (no CAP_SYS_ADMIN)."""
        if not self.present:
            return None
        return (self.raw & PFN_MASK) or None


def parse(raw: Sequence[int]) -> list[Entry]:
    for value in raw:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"pagemap entry {value} is not a 64-bit unsigned integer")
    return [Entry(int(v)) for v in raw]


@dataclass(frozen=True)
class Move:
    addr: int
    old_pfn: int
    new_pfn: int


def moved_pages(base: int, page_size: int, before: Sequence[int], after: Sequence[int],
                stride: int = 1) -> list[Move]:
    """Pages present in both snapshots whose frame changed; entry i is the page at base + i*stride pages."""
    if len(before) != len(after):
        raise ValueError(f"pagemap snapshots differ in length: {len(before)} and {len(after)}")
    moves = []
    for i, (b, a) in enumerate(zip(parse(before), parse(after), strict=True)):
        if b.pfn is None or a.pfn is None:
            if b.present and not b.pfn:
                raise ValueError("pagemap shows no frame numbers: the reader lacks CAP_SYS_ADMIN")
            continue
        if b.pfn != a.pfn:
            moves.append(Move(base + i * stride * page_size, b.pfn, a.pfn))
    return moves


def uncovered_moves(moves: Sequence[Move], events: Sequence[Event], page_size: int, seq_before: int,
                    seq_after: int) -> list[Move]:
    """Moves that no invalidation covered: none started in the window [seq_before, seq_after) (the probe's
    record count read before the first snapshot and after the second) over the whole page."""
    window = [e for e in events if e.kind in ("start", "invalidate") and seq_before <= e.seq < seq_after]
    return [m for m in moves if not any(e.start <= m.addr and m.addr + page_size <= e.end for e in window)]
