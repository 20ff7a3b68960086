"""What `harness trace` shows of a traced program: its notifier events, as JSON rows and as a listing.

Events are the notifier's invalidate_range_start calls, in order, and its release at exit, shown as
the kernel shows release to interval notifiers: RELEASE over [0, ULONG_MAX). The use case itself is
harness/app/trace.py.
"""

from __future__ import annotations

from harness.results.events import Event

ULONG_MAX = (1 << 64) - 1


def events_of(records: list[Event]) -> list[dict]:
    """The invalidation starts and the release of one process, in order, as the JSON document lists them."""
    out = []
    for e in records:
        if e.kind == "start":
            out.append({"seq": e.seq, "event": e.event, "start": e.start, "end": e.end, "flags": e.flags})
        elif e.kind == "release":
            out.append({"seq": e.seq, "event": "RELEASE", "start": 0, "end": ULONG_MAX, "flags": 0})
    return out


def render(events: list[dict], stdout: str, exit_status: int) -> str:
    """The human-readable listing: one event a line, then the program's stdout and exit status."""
    lines = [f"{'seq':>6}  {'event':<16} {'start':>18}  {'end':>18}  flags"]
    lines += [f"{e['seq']:>6}  {e['event']:<16} {e['start']:#18x}  {e['end']:#18x}  {e['flags']:#x}" for e in events]
    lines.append(f"--- stdout ({len(stdout.splitlines())} lines)")
    if stdout:
        lines.append(stdout.rstrip("\n"))
    lines.append(f"--- exit status {exit_status}")
    return "\n".join(lines)
