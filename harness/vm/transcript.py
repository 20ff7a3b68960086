"""What the host keeps of a console as it arrives: bounded in memory and linear in time, whatever the guest prints.

harness/vm/console.py's reader thread feeds each chunk in; each line is looked at once, as it completes, for
the boot's markers, the kernel's first line, splats (harness/observe/splat.py) and the patterns a caller
waits for. Lines that hold none of the words these start with are passed over in bulk (a search and a count
per chunk); the others are read one by one. Nothing older is searched again, so 32 MiB of console cost what
32 MiB of lines cost, and the memory kept is:
  - the text's tail: the last `limits.console_memory_bytes` characters (QEMU's last words, a boot's tail);
  - a line in progress: its first MAX_LINE characters (a kernel line is at most 1024; longer ones are cut
    for the scanner and the patterns, never for the log on disk);
  - MAX_MARKERS marker lines and MAX_SPLATS splats (the first fatal one always kept).
A pattern a caller waits for is searched in each chunk's complete lines at once (its `^` and `\\n` as in
re.MULTILINE, `\\r`s as printed); it must match within one line.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from harness.results.splat import KEYWORDS, Splat, SplatScanner
from harness.vm.timeline import Arrival

MAX_LINE = 4096
MAX_MARKERS = 1000  # /init prints about ten; a guest printing "HARNESS-" lines without end gets no more
MAX_SPLATS = 100


@functools.cache
def _worth_reading(markers: bool, kernel_line: bool) -> re.Pattern[str]:
    """What a line worth reading one at a time holds: what a splat's header holds, and while they are looked
    for, a marker and the kernel's first line."""
    words = (*(["HARNESS-"] if markers else []), *(["Linux version"] if kernel_line else []), *KEYWORDS)
    return re.compile("|".join(re.escape(w) for w in words))


class Tail:
    """The last `limit` characters of a stream (and at most one chunk more), kept as the chunks came."""
    # A chunk's own string is kept, not a copy: a ring of characters would copy every one of them.

    def __init__(self, limit: int):
        self.limit = limit
        self.start = 0  # the stream position of the first character kept
        self._chunks: deque[str] = deque()
        self._kept = 0

    def append(self, chunk: str) -> None:
        self._chunks.append(chunk)
        self._kept += len(chunk)
        while self._kept - len(self._chunks[0]) >= self.limit:
            dropped = self._chunks.popleft()
            self._kept -= len(dropped)
            self.start += len(dropped)

    def text(self) -> str:
        if len(self._chunks) > 1:  # joined once, then kept joined until more arrives
            joined = "".join(self._chunks)
            excess = max(len(joined) - self.limit, 0)
            self._chunks = deque([joined[excess:]])
            self._kept -= excess
            self.start += excess
        return self._chunks[0] if self._chunks else ""


@dataclass
class Watch:
    """A pattern a caller waits for, in lines that start at or after `since`."""

    regex: re.Pattern[str]
    since: int
    match: re.Match[str] | None = None


class Transcript:
    def __init__(self, memory_limit: int, cpu_s: Callable[[], float | None] = lambda: None):
        """cpu_s: QEMU's CPU seconds now, taken when a marker or the kernel's first line arrives."""
        self._cpu_s = cpu_s
        self._tail = Tail(memory_limit)
        self.size = 0  # characters received in all
        self._line = ""  # the line in progress, cut at MAX_LINE
        self._line_start = 0  # its stream position
        self._scanner = SplatScanner(keep=MAX_SPLATS)
        self._watches: list[Watch] = []
        self.splats: list[Splat] = []  # every splat started so far (fatal or not), up to MAX_SPLATS
        self.fatal: Splat | None = None
        self.kernel_line: Arrival | None = None  # the kernel's first line ("Linux version ...")
        self.markers: list[Arrival] = []  # "HARNESS-..." lines /init printed, up to MAX_MARKERS

    def feed(self, chunk: str, arrived: float) -> None:
        self._tail.append(chunk)
        end = chunk.rfind("\n") + 1  # the complete lines end here
        if end:
            for w in self._watches:
                self._search(w, chunk, end)
            pos = 0
            if self._line:  # the line in progress ends in this chunk: read whole
                pos = self._read_line(chunk, 0, arrived)
            while pos < end:
                pos = self._plain_lines(chunk, pos, end) if self._scanner.idle else pos
                if pos < end:
                    pos = self._read_line(chunk, pos, arrived)
            self._line_start = self.size + end
        self._extend(chunk, end, len(chunk))
        self.size += len(chunk)

    def finish(self, arrived: float) -> None:
        """At the end of the stream: its last line, even without a newline."""
        if self._line:
            self._complete(arrived)
            self._line_start = self.size

    def text(self) -> str:
        """The tail of the text (harness/vm/limits.py console_memory_bytes)."""
        return self._tail.text()

    def finished_splats(self) -> list[Splat]:
        return self._scanner.finish()

    def watch(self, regex: re.Pattern[str], since: int) -> Watch:
        """Search the complete lines kept that start at or after `since`; then, until unwatch(), every
        line as it completes."""
        w = Watch(regex, since)
        text, first = self._tail.text(), self._tail.start
        begin = min(max(since, first), self.size)
        if begin > 0 and (begin == first or text[begin - first - 1] != "\n"):
            cut = text.find("\n", begin - first)  # inside a line (or its start not kept): from the next one
            begin = self._line_start if cut < 0 else first + cut + 1
        if begin < self._line_start:  # the complete lines kept from there
            w.match = w.regex.search(text, begin - first, self._line_start - first)
        w.since = max(since, self._line_start)
        self._watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        self._watches.remove(w)

    def _search(self, w: Watch, chunk: str, end: int) -> None:
        """A watch's pattern in the lines that complete in chunk[:end] (a pattern never spans lines)."""
        if w.match is not None:
            return
        block = self._line + chunk[:end] if self._line else chunk  # copied only to join a line's two pieces
        pos = 0 if self._line_start >= w.since else block.find("\n") + 1  # a line begun before `since`: not its
        w.match = w.regex.search(block, pos, len(self._line) + end)

    def _plain_lines(self, chunk: str, pos: int, end: int) -> int:
        """Lines from `pos` that nothing looks for (no marker, no splat keyword), counted and passed over at
        the speed of one search; where the next line worth reading starts."""
        worth = _worth_reading(len(self.markers) < MAX_MARKERS, self.kernel_line is None)
        hit = worth.search(chunk, pos, end)
        stop = end if hit is None else chunk.rfind("\n", pos, hit.start()) + 1 or pos
        if stop > pos:
            count = chunk.count("\n", pos, stop)
            last: list[str] = []
            at = stop - 1
            while len(last) < 3 and at >= pos:  # the last lines, as a prelude of a splat may be
                begin = max(chunk.rfind("\n", pos, at), pos - 1) + 1
                last.insert(0, chunk[begin:min(at, begin + MAX_LINE)].replace("\r", ""))
                at = begin - 1
            self._scanner.skip(count, last)
        return stop

    def _read_line(self, chunk: str, pos: int, arrived: float) -> int:
        """The line at `pos` (after the line in progress), whole; where the next one starts."""
        end = chunk.find("\n", pos)
        self._extend(chunk, pos, end)
        self._complete(arrived)
        self._line_start = self.size + end + 1
        return end + 1

    def _extend(self, chunk: str, start: int, end: int) -> None:
        room = MAX_LINE - len(self._line)
        if room > 0:
            self._line += chunk[start:min(end, start + room)]

    def _complete(self, arrived: float) -> None:
        line, self._line = self._line.replace("\r", ""), ""
        if line.startswith("HARNESS-"):
            if len(self.markers) < MAX_MARKERS:
                self.markers.append(Arrival(arrived, self._cpu_s(), line))
        elif self.kernel_line is None and "Linux version" in line:
            self.kernel_line = Arrival(arrived, self._cpu_s(), line)
        started = self._scanner.feed(line)
        if started is None:
            return
        if started.fatal and self.fatal is None:
            self.fatal = started
            self.splats.append(started)
        elif len(self.splats) < MAX_SPLATS:
            self.splats.append(started)
