"""The console as the host keeps it (harness/vm/transcript.py, harness/vm/console.py ConsoleLog): fed in chunks
of any size it finds what a whole log holds, and whatever the guest prints it costs linear time and bounded
memory. A real guest's floods: tests/test_guest_floods.py."""

from __future__ import annotations

import random
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.results.splat import SplatScanner, find_splats
from harness.vm.console import ConsoleLog
from harness.vm.machine import READY_RE
from harness.vm.transcript import MAX_LINE, MAX_MARKERS, MAX_SPLATS, Tail, Transcript

DATA = Path(__file__).parent / "data" / "splats"
LOGS = sorted(DATA.rglob("*.log"))
MIB = 1 << 20
KERNEL_LINE = "[   12.345678] virtio_net virtio0 eth0: some message a kernel prints, nothing in it\r\r\n"


def _chunks(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i:i + size]


def _fed(text: str, size: int) -> Transcript:
    t = Transcript(MIB)
    for piece in _chunks(text, size):
        t.feed(piece, 0.0)
    t.finish(0.0)
    return t


def _flood(t: Transcript, line: str, total: int, chunk: int = 65536) -> None:
    """`total` characters of `line` again and again, in chunks of `chunk` (one string, fed each time)."""
    piece = (line * (chunk // len(line) + 1))[:chunk]
    for _ in range(total // chunk):
        t.feed(piece, 0.0)


@pytest.mark.parametrize("log", LOGS, ids=[str(p.relative_to(DATA)) for p in LOGS])
@pytest.mark.parametrize("size", [1, 7, 80, 4096, 65536])
def test_in_chunks_of_any_size_the_transcript_finds_what_the_whole_log_holds(log: Path, size: int):
    text = log.read_text()
    lines = text.replace("\r", "").split("\n")
    scanner = SplatScanner()
    started = [s for line in lines if (s := scanner.feed(line)) is not None]
    t = _fed(text, size)
    assert t.finished_splats() == find_splats(text.replace("\r", ""))
    assert t.splats == started[:MAX_SPLATS]
    assert t.fatal == next((s for s in started if s.fatal), None)
    assert [m.line for m in t.markers] == [line for line in lines if line.startswith("HARNESS-")]
    kernel = next((line for line in lines if "Linux version" in line and not line.startswith("HARNESS-")), None)
    assert (t.kernel_line.line if t.kernel_line else None) == kernel
    assert t.size == len(text)


def test_a_splat_is_found_whatever_plain_lines_surround_it():
    """The bulk pass over plain lines keeps the three before a header, as a `[ cut here ]` prelude may be."""
    warning = (DATA / "6.12/warning.log").read_text()
    plain = "".join(f"[    1.{i:06d}] plain line {i}\n" for i in range(5000))
    text = plain + warning + plain
    want = find_splats(text)
    assert want and want[0].title == "WARNING in warn_write" and "[ cut here ]" in want[0].text.split("\n")[0]
    rng = random.Random(7)
    for _ in range(20):
        t, at = Transcript(MIB), 0
        while at < len(text):
            step = rng.randint(1, 9000)
            t.feed(text[at:at + step], 0.0)
            at += step
        t.finish(0.0)
        assert t.finished_splats() == want


def test_a_pattern_matches_a_line_once_it_is_whole_and_never_one_before_since():
    t = Transcript(MIB)
    t.feed("boot\r\r\nHARNESS-READY 6.", 0.0)
    early = t.watch(re.compile(READY_RE, re.M), 0)
    assert early.match is None  # the release is still printing
    t.feed("12.118\r\r\nmore\n", 0.0)
    assert early.match and early.match[1] == "6.12.118"
    assert t.watch(re.compile(READY_RE, re.M), 0).match[1] == "6.12.118"  # already there: found at once
    later = t.watch(re.compile(READY_RE, re.M), t.size)
    assert later.match is None  # the one before `since` is not this wait's
    t.feed("HARNESS-READY 7.3.4\n", 0.0)
    assert later.match and later.match[1] == "7.3.4"


def test_the_tail_keeps_the_last_characters_and_says_where_they_start():
    tail, stream = Tail(10), ""
    for piece in ("abcdef", "ghijkl", "mnop", "q" * 25, "rs"):
        tail.append(piece)
        stream += piece
        text = tail.text()
        assert text == stream[tail.start:]
        assert len(text) >= min(10, len(stream)) and len(text) <= 10 + len(piece)  # at most one chunk more
    assert tail.text() == "q" * 8 + "rs"


def test_32_mib_of_console_takes_linear_time():
    """CPU time of this process (not wall time, which a loaded host stretches); the brief's measure of the
    reader before: 8.3 s for 32 MiB, growing with the square of the input."""
    cost = {}
    for line in (KERNEL_LINE, "y\n"):
        for total in (4 * MIB, 32 * MIB):
            t = Transcript(MIB)
            started = time.process_time()
            _flood(t, line, total)
            cost[line, total] = time.process_time() - started
            assert t.size == total
    for line in (KERNEL_LINE, "y\n"):
        assert cost[line, 32 * MIB] < 2.0, cost  # measured 0.15 s and 0.08 s on the 2-core host
        assert cost[line, 32 * MIB] < 8 * 3 * max(cost[line, 4 * MIB], 0.01), cost  # 8 times the input


@pytest.mark.parametrize("line", [KERNEL_LINE, "y\n", "x" * 100_000, "HARNESS-STAGE x\n", "BUG: flood\n"],
                         ids=["kernel-lines", "short-lines", "no-newline", "markers", "splat-headers"])
def test_a_console_flood_keeps_memory_bounded(line: str):
    total = 32 * MIB if not line.startswith("BUG") else MIB // 4  # a header a line: read line by line, slower
    t = Transcript(MIB)
    tracemalloc.start()
    try:
        _flood(t, line, total)
        t.feed("\nHARNESS-READY 6.12.118\n", 0.0)  # the flood may end inside a line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The tail (1 MiB of characters, kept as they came), one chunk, a line, splats and markers up to their caps.
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB"
    assert len(t.markers) <= MAX_MARKERS and len(t.splats) <= MAX_SPLATS + 1
    assert len(t.finished_splats()) <= MAX_SPLATS + 1
    assert len(t.text()) <= MIB + 65536
    assert t.watch(re.compile(READY_RE, re.M), 0).match or line.startswith("HARNESS"), "the line after the flood"


def test_past_its_splat_cap_a_panic_is_still_seen():
    t = Transcript(MIB)
    _flood(t, "BUG: flood\n", 1 * MIB)
    assert len(t.splats) == MAX_SPLATS and t.fatal is None
    t.feed("\nKernel panic - not syncing: the end\n", 0.0)
    assert t.fatal and t.fatal.text.endswith("Kernel panic - not syncing: the end")  # the open BUG's consequence
    assert any(s.fatal for s in t.finished_splats())


def test_a_line_longer_than_the_cap_is_cut_for_the_scanner_and_the_next_one_is_whole():
    t = Transcript(MIB)
    _flood(t, "HARNESS-" + "z" * 1_000_000, 2 * MIB)
    t.feed("\nHARNESS-STAGE init 0.9\n", 0.0)
    assert [len(m.line) for m in t.markers] == [MAX_LINE, len("HARNESS-STAGE init 0.9")]


def test_the_console_log_stops_at_its_limit_and_says_why(tmp_path: Path):
    log = ConsoleLog(tmp_path / "console.log", 100_000)
    for _ in range(50):
        log.write("é" * 2000)  # 4000 bytes each
    log.write("never written")
    log.close()
    data = (tmp_path / "console.log").read_bytes()
    assert data.startswith("é".encode() * 50_000)
    assert data[100_000:].decode() == f"\n[harness: {log.flooded}]\n"
    assert log.flooded.startswith("the guest flooded the console: it printed more than 100000 bytes")
    assert "HARNESS_LIMIT_CONSOLE_LOG_BYTES" in log.flooded and not log.error


def test_a_log_under_its_limit_is_whole_and_not_flooded(tmp_path: Path):
    log = ConsoleLog(tmp_path / "console.log", 100_000)
    log.write("boot\r\n")
    log.close()
    assert (tmp_path / "console.log").read_bytes() == b"boot\r\n" and log.flooded == ""
