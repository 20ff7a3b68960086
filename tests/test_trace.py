"""`harness trace`: the listing and JSON logic, and one real run on a program the harness does not ship."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from harness.observe.probe import parse_events
from harness.observe.trace import ULONG_MAX, events_of, render

RECORDS = parse_events("""\
seq=0 pid=7 cpid=7 sub=mn kind=start event=CLEAR start=0x4a2000 end=0x4a3000 flags=0x1
seq=1 pid=7 cpid=7 sub=mn kind=end event=CLEAR start=0x4a2000 end=0x4a3000 flags=0x1
seq=2 pid=7 cpid=7 sub=mn kind=release
""")


def test_events_are_starts_and_release():
    assert events_of(RECORDS) == [
        {"seq": 0, "event": "CLEAR", "start": 0x4A2000, "end": 0x4A3000, "flags": 1},
        {"seq": 2, "event": "RELEASE", "start": 0, "end": ULONG_MAX, "flags": 0},
    ]


def test_render_lists_events_then_stdout_and_status():
    text = render(events_of(RECORDS), "hello\n", 3)
    lines = text.splitlines()
    assert lines[1].split() == ["0", "CLEAR", "0x4a2000", "0x4a3000", "0x1"]
    assert lines[-3:] == ["--- stdout (1 lines)", "hello", "--- exit status 3"]


@pytest.mark.e2e
@pytest.mark.parametrize("ksrc", ["debian:6.12", "debian:7.3"])
def test_trace_a_program_from_its_first_instruction(tmp_path: Path, ksrc: str):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the test program")
    prog = tmp_path / "trace_target"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(prog), str(paths.REPO / "tests/data/trace_target.c")],
                   check=True)
    command = [sys.executable, "-m", "harness.cli", "trace", "--json", f"--kernel-src={ksrc}", "--", str(prog), "hello"]
    proc = subprocess.run(command, cwd=paths.REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 3, proc.stderr  # the traced program's status, as with strace
    doc = json.loads(proc.stdout)
    assert doc["exit_status"] == 3
    out = dict(line.split(" ", 1) for line in doc["stdout"].splitlines())
    early, late = (tuple(int(x) for x in out[k].split()) for k in ("early", "late"))
    assert out["arg"] == "hello"
    seen = [(e["event"], e["start"], e["end"]) for e in doc["events"]]
    # The constructor's munmap runs before main: seen only if the probe watched from the exec on.
    assert ("UNMAP", *early) in seen, seen
    assert ("PROTECTION_VMA", *late) in seen, seen
    assert seen[-1] == ("RELEASE", 0, ULONG_MAX), "release at exit comes last"
    assert [e["seq"] for e in doc["events"]] == sorted(e["seq"] for e in doc["events"])
