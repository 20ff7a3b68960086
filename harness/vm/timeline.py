"""A boot's timeline: when each stage was reached, in host seconds since QEMU started.

    qemu     QEMU started (0 by definition)
    kernel   the kernel's first console line arrived ("Linux version": the console comes up early in
             start_kernel and prints the log from its start; at loglevel 5 or lower it is not printed)
    init     /init started (images/init's first marker)
    modules  the modules the harness asked for are loaded
    net      eth0 is up with its address and route
    sshd     dropbear is listening on port 22 (seen in /proc/net/tcp)
    ssh      the harness's SSH session is authenticated
    command  the first command over it (`cat /proc/uptime`) came back

Times are taken on the host, when a console line arrives (harness/vm/console.py) or an SSH step
returns: guest clocks under TCG drift, and the guest cannot see QEMU's start. /init prints its markers
as `HARNESS-STAGE <stage> <guest uptime>`; the guest's uptime is kept beside, for reading only.
Beside each time, the CPU seconds QEMU had used by then (`qemu_cpu_s`): on a host busy with other
work the wall clock of a boot stretches two or three times, its CPU time much less.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

STAGES = ("qemu", "kernel", "init", "modules", "net", "sshd", "ssh", "command")
GUEST_STAGES = ("init", "modules", "net", "sshd")  # the ones /init announces on the console
MARKER_RE = re.compile(r"^HARNESS-STAGE (\w+)(?: ([\d.]+))?\s*$")


def parse_marker(line: str) -> tuple[str, float | None] | None:
    """("init", 0.93) for "HARNESS-STAGE init 0.93"; None for any other line or an unknown stage."""
    m = MARKER_RE.match(line.rstrip("\r"))
    if not m or m[1] not in GUEST_STAGES:
        return None
    return m[1], float(m[2]) if m[2] else None


@dataclass(frozen=True)
class Arrival:
    """A console line as the host saw it arrive: time.monotonic(), QEMU's CPU seconds then, the line."""

    at: float
    cpu_s: float | None
    line: str


@dataclass
class Timeline:
    at: dict[str, float] = field(default_factory=dict)  # stage -> host seconds since QEMU started
    guest_uptime: dict[str, float] = field(default_factory=dict)  # stage -> the guest's /proc/uptime then
    cpu: dict[str, float] = field(default_factory=dict)  # stage -> CPU seconds QEMU had used by then

    @classmethod
    def from_console(cls, started: float, kernel_line: Arrival | None, markers: list[Arrival]) -> Timeline:
        """From the console's arrivals: the kernel's first line and the marker lines. A stage announced
        twice (a guest that rebooted) keeps its first time."""
        timeline = cls({"qemu": 0.0})
        if kernel_line is not None:
            timeline.mark("kernel", kernel_line.at - started, kernel_line.cpu_s)
        for arrival in markers:
            if (parsed := parse_marker(arrival.line)) and parsed[0] not in timeline.at:
                timeline.mark(parsed[0], arrival.at - started, arrival.cpu_s, guest_uptime=parsed[1])
        return timeline

    def mark(self, stage: str, seconds: float, cpu_s: float | None = None, guest_uptime: float | None = None) -> None:
        self.at[stage] = round(seconds, 4)
        if cpu_s is not None:
            self.cpu[stage] = round(cpu_s, 2)
        if guest_uptime is not None:
            self.guest_uptime[stage] = guest_uptime

    def last_stage(self) -> str:
        """The furthest stage reached, in STAGES order ("qemu" when nothing else was)."""
        return next((s for s in reversed(STAGES) if s in self.at), "qemu")

    def describe_last(self) -> str:
        """"last stage reached: init (at 1.42 s)", for a boot that went no further."""
        stage = self.last_stage()
        return f"last stage reached: {stage} (at {self.at.get(stage, 0.0):.2f} s)"

    def problems(self) -> list[str]:
        """What is wrong with this timeline as a whole boot's: a stage missing, or one before its predecessor."""
        missing = [s for s in STAGES if s not in self.at]
        out = [f"stage {s} missing" for s in missing]
        present = [s for s in STAGES if s in self.at]
        out += [f"{b} at {self.at[b]} s precedes {a} at {self.at[a]} s"
                for a, b in itertools.pairwise(present) if self.at[b] < self.at[a]]
        return out

    def to_json(self) -> dict[str, object]:
        """{"kernel": 0.31, ..., "guest_uptime": {"init": 0.93, ...}, "qemu_cpu_s": {...}} in STAGES order."""
        out: dict[str, object] = {s: self.at[s] for s in STAGES if s in self.at}
        if self.guest_uptime:
            out["guest_uptime"] = {s: self.guest_uptime[s] for s in STAGES if s in self.guest_uptime}
        if self.cpu:
            out["qemu_cpu_s"] = {s: self.cpu[s] for s in STAGES if s in self.cpu}
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Timeline:
        def stages(value: object) -> dict[str, float]:
            items = value.items() if isinstance(value, Mapping) else ()
            return {s: float(v) for s, v in items if s in STAGES and isinstance(v, int | float)}

        return cls(stages(d), stages(d.get("guest_uptime")), stages(d.get("qemu_cpu_s")))
