"""What the guest shows: the probe module's records (debugfs) and the kernel log since a marker."""

from __future__ import annotations

import json
import uuid

from harness.results.events import Event
from harness.vm.ssh import SSH

PROBE_DIR = "/sys/kernel/debug/mmu_probe"


_INT_FIELDS = {"seq", "pid", "cpid", "start", "end", "flags"}


def parse_events(text: str) -> list[Event]:
    """Parse /sys/kernel/debug/mmu_probe/events (key=value fields, one record a line)."""
    events = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields: dict[str, int | str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if not sep:
                raise ValueError(f"probe events line {lineno}: malformed field {token!r} in {line!r}")
            fields[key] = int(value, 0) if key in _INT_FIELDS else value
        try:
            events.append(Event(**fields))  # type: ignore[arg-type]
        except TypeError as e:
            raise ValueError(f"probe events line {lineno}: {e}: {line!r}") from None
    return events


def parse_counters(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in (line.split() for line in text.splitlines() if line.strip())}


def unpaired_starts(events: list[Event]) -> list[Event]:
    """Starts with no matching end (same pid, event and range) after them: a notifier contract breach."""
    open_starts: list[Event] = []
    for ev in events:
        if ev.kind == "start":
            open_starts.append(ev)
        elif ev.kind == "end":
            for i, st in enumerate(open_starts):
                if (st.pid, st.event, st.start, st.end) == (ev.pid, ev.event, ev.start, ev.end):
                    del open_starts[i]
                    break
    return open_starts


def orphan_ends(events: list[Event]) -> list[Event]:
    """Ends with no open start (same pid, event and range) before them: the other half of the contract."""
    open_starts: list[Event] = []
    orphans = []
    for ev in events:
        if ev.kind == "start":
            open_starts.append(ev)
        elif ev.kind == "end":
            key = (ev.pid, ev.event, ev.start, ev.end)
            match = next((i for i, st in enumerate(open_starts) if (st.pid, st.event, st.start, st.end) == key), None)
            if match is None:
                orphans.append(ev)
            else:
                del open_starts[match]
    return orphans


class Probe:
    """The mmu_probe module in a running guest."""

    def __init__(self, ssh: SSH):
        self.ssh = ssh

    def clear(self) -> None:
        self.ssh.run(["sh", "-c", f"echo 1 > {PROBE_DIR}/clear"], check=True)

    def watch(self, pid: int) -> None:
        """Subscribe a classic mmu_notifier to the mm of `pid`."""
        self.ssh.run(["sh", "-c", f'echo "$1" > {PROBE_DIR}/watch', "watch", str(pid)], check=True)

    def watch_range(self, pid: int, start: int, end: int) -> None:
        """Subscribe an mmu_interval_notifier on [start, end) of the mm of `pid`."""
        self.ssh.run(["sh", "-c", f'echo "$1 $2 $3" > {PROBE_DIR}/watch_range', "watch", str(pid), str(start),
                      str(end)], check=True)

    def events(self, pid: int | None = None) -> list[Event]:
        text = self.ssh.run(["cat", f"{PROBE_DIR}/events"], check=True).stdout
        events = parse_events(text)
        return [e for e in events if pid is None or e.pid == pid]

    def counters(self) -> dict[str, int]:
        return parse_counters(self.ssh.run(["cat", f"{PROBE_DIR}/counters"], check=True).stdout)


class Dmesg:
    """The kernel log of one test: everything after a unique marker written to /dev/kmsg."""

    def __init__(self, ssh: SSH, label: str):
        self.ssh = ssh
        self.marker = f"harness-mark {uuid.uuid4().hex[:12]} {label}"
        self.ssh.run(["sh", "-c", 'echo "$1" > /dev/kmsg', "mark", self.marker], check=True)

    def since_mark(self, timeout: float = 60) -> str:
        text = self.ssh.run(["dmesg"], timeout=timeout, check=True).stdout
        _, found, after = text.partition(self.marker)
        if not found:
            # The ring buffer wrapped past the marker: say so rather than check a partial log silently.
            raise RuntimeError(f"dmesg marker {self.marker!r} is gone (log buffer wrapped)")
        return after.split("\n", 1)[1] if "\n" in after else ""


def dump_events(events: list[Event]) -> str:
    return json.dumps([e.to_json() for e in events], indent=1)
