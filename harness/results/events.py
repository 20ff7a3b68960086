"""The invalidation record every observer produces (the probe module, the kprobe, a trace), and what can be
said of one against a workload's range: the record type that expectations, `harness compare` and reports share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Event:
    """One probe record: kind is start|end|release (classic notifier, sub "mn") or invalidate (interval
    notifier, sub "itv"); event is the kernel's enum name sans MMU_NOTIFY_."""

    seq: int
    pid: int
    cpid: int
    kind: str
    event: str = ""
    start: int = 0
    end: int = 0
    flags: int = 0
    sub: str = "mn"

    def covers(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end

    def to_json(self) -> dict:
        return asdict(self)


OBSERVERS = {"mn": "start", "itv": "invalidate"}  # observer -> the record kind it produces


def related(ev: Event, start: int, end: int, relation: str, page_size: int) -> bool:
    """Whether the event's range is `relation` (equal, covers, within, page: one page inside) to [start, end)."""
    if relation == "equal":
        return (ev.start, ev.end) == (start, end)
    if relation == "covers":
        return ev.start <= start and end <= ev.end
    if relation == "within":
        return start <= ev.start and ev.end <= end
    return ev.end - ev.start == page_size and start <= ev.start and ev.end <= end  # page


def invalidations(events: list[Event]) -> list[Event]:
    """The records that are invalidations: classic starts and interval invalidates."""
    return [e for e in events if OBSERVERS.get(e.sub) == e.kind]
