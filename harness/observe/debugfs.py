"""debugfs as driver tests read it: files fetched from the guest, and parsers for the shapes drivers print.

Drivers print their state in a few shapes, each with a parser here:
  counters  a directory of one-integer files        /sys/kernel/debug/kvm/{,<pid>-<fd>/}pages_4k ...
  table     a header row, then whitespace columns   /sys/kernel/debug/dri/N/{gem_names,clients}
  fields    "key : value" lines                     /sys/kernel/debug/dri/N/virtio-gpu-features
A tracefs event can be switched on around a workload (Tracepoint) and its lines parsed (trace_events).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from harness.vm.ssh import SSH

DEBUGFS = "/sys/kernel/debug"
TRACEFS = "/sys/kernel/tracing"


class DebugfsError(Exception):
    """A debugfs file the test needs is not there, or not in the shape expected."""


def read(ssh: SSH, path: str) -> str:
    result = ssh.run(["cat", path])
    if not result.ok:
        raise DebugfsError(f"cannot read {path}: {result.stderr.strip() or f'exit {result.exit_status}'}")
    return result.stdout


def exists(ssh: SSH, path: str) -> bool:
    return ssh.run(["test", "-e", path]).ok


# One command for a whole directory: "name<TAB>contents" per regular file, contents on one line.
_DUMP = 'for f in "$1"/*; do [ -f "$f" ] && printf "%s\\t%s\\n" "${f##*/}" "$(tr "\\n" " " < "$f")"; done'


def read_counters(ssh: SSH, directory: str) -> dict[str, int]:
    """Every file of `directory` that holds a single integer (histograms and the like are left out)."""
    result = ssh.run(["sh", "-c", _DUMP, "dump", directory])
    if not result.ok:
        raise DebugfsError(f"cannot list {directory}: {result.stderr.strip()}")
    return parse_counters_dump(result.stdout)


def parse_counters_dump(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition("\t")
        if re.fullmatch(r"\s*-?\d+\s*", value):
            out[name] = int(value)
    return out


def diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before for every counter that changed (a counter missing on one side counts as 0)."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}


def parse_table(text: str) -> list[dict[str, str]]:
    """A header line of column names, then one whitespace-separated row per line (DRM's gem_names, clients).

    A row with more fields than the header joins the extra leading ones into the first column (a
    command name with spaces); one with fewer is an error.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DebugfsError("empty table: not even a header line")
    header = lines[0].split()
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < len(header):
            raise DebugfsError(f"table row {line!r} has fewer fields than the header {header}")
        extra = len(fields) - len(header)
        fields = [" ".join(fields[: extra + 1]), *fields[extra + 1:]]
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def parse_fields(text: str) -> dict[str, str]:
    """`key : value` lines (virtio-gpu-features), keys with their inner spaces, both sides stripped."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def find_dri(ssh: SSH, driver: str) -> str | None:
    """/sys/kernel/debug/dri/<minor> of the first DRM device whose `name` file starts with `driver`."""
    result = ssh.run(["sh", "-c", f'for d in {DEBUGFS}/dri/[0-9]*; do [ -f "$d/name" ] && '
                      'printf "%s\\t%s\\n" "$d" "$(cat "$d/name")"; done'])
    for line in result.stdout.splitlines():
        path, _, name = line.partition("\t")
        if name.split(" ", 1)[0] == driver:
            return path
    return None


# --- tracefs events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceEvent:
    task: str
    pid: int
    timestamp: float
    event: str
    text: str  # what the event's TP_printk printed


_TRACE_LINE = re.compile(r"^\s*(.+)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$")


def trace_events(text: str, event: str | None = None) -> list[TraceEvent]:
    """Lines of /sys/kernel/tracing/trace (the default `nop` tracer's format), optionally of one event."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _TRACE_LINE.match(line)
        if m and (event is None or m[4] == event):
            out.append(TraceEvent(m[1].strip(), int(m[2]), float(m[3]), m[4], m[5]))
    return out


class Tracepoint:
    """A tracefs event switched on for the duration of a `with` block, the trace buffer emptied first."""

    def __init__(self, ssh: SSH, event: str):  # event: "kvm/kvm_unmap_hva_range"
        self.ssh = ssh
        self.event = event
        self.enable = f"{TRACEFS}/events/{event}/enable"

    def available(self) -> bool:
        return exists(self.ssh, self.enable)

    def __enter__(self) -> Tracepoint:
        self._write("0", f"{TRACEFS}/trace")
        self._write("1", self.enable)
        return self

    def read(self) -> str:
        return read(self.ssh, f"{TRACEFS}/trace")

    def __exit__(self, *exc: object) -> None:
        self._write("0", self.enable)

    def _write(self, value: str, path: str) -> None:
        self.ssh.run(["sh", "-c", f"echo {value} > {shlex.quote(path)}"], check=True)
