"""Find and name kernel splats (panic, oops, WARNING, KASAN, lockdep...) in console or dmesg text.

A small cousin of syzkaller's pkg/report: a catalogue of header lines, each giving a kind and a rule for
a one-line title that is stable across runs ("WARNING in foo", "KASAN: use-after-free Read in bar"): no
addresses, PIDs or durations. The formats are those of Linux 6.12 and 6.1 on x86_64 (`<TASK>` markers
around call traces, "Oops: Oops: 0002 [#1]" in 6.12), as in tests/data/splats/.

Where a splat starts and ends:
- It starts at its header, or at the `[ cut here ]`, `=====` or `sysrq: Trigger a crash` line printed
  just before it.
- Its body runs to `</TASK>` (the end of the call trace), `---[ end trace ...]---`, KASAN's or KFENCE's
  closing `=====` line, `Kernel Offset:` (a panic prints no stack dump without CONFIG_DEBUG_BUGVERBOSE,
  so this is where it ends), or, for kmemleak, the last indented line. After that, the lines the kernel
  prints in the wake of a splat (`Modules linked in`, the end marker, the register summary of an oops,
  `Kernel Offset`) are still taken as its tail; the first other line ends it.
- A `Kernel panic - not syncing` printed during a splat or in its tail is that splat's consequence (an
  oops with panic_on_oops, a WARNING with panic_on_warn, a hung task with hung_task_panic): it marks the
  splat fatal and extends it instead of being a second splat. `---[ end Kernel panic` closes it.
- A line that starts another stack dump of the same report (another CPU's, or, in an RCU stall, the
  CPU where the starved grace-period kthread last ran) reopens its body.
- A new header closes the current splat; so does a line of QEMU's own, and the cap of MAX_LINES lines.

Call traces: a frame printed with `?` is a guess, skipped when naming a culprit, unless no frame of
that trace is reliable (CONFIG_UNWINDER_GUESS, as in tinyconfig kernels, prints every frame so).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.results.splat_title import title

MAX_LINES = 200

KINDS = (
    "panic",
    "oops",
    "BUG",
    "WARNING",
    "KASAN",
    "KCSAN",
    "UBSAN",
    "lockdep",
    "hung_task",
    "rcu_stall",
    "soft_lockup",
    "hard_lockup",
    "kfence",
    "kmemleak",
)


@dataclass(frozen=True)
class Splat:
    """One kernel report found in a log."""

    kind: str  # one of KINDS
    title: str  # short and stable across runs, e.g. "WARNING in mmu_probe_init"
    fatal: bool  # the kernel panicked (or is about to): nothing after it can be trusted
    text: str  # the splat's original lines, timestamps included, at most MAX_LINES
    line: int  # 1-based line number of its first line in the input


# /dev/kmsg record header, <level>, [timestamp], then the caller id of CONFIG_PRINTK_CALLER.
_PREFIX = re.compile(r"^(?:\d+,\d+,\d+,[^;]*;)?(?:<\d+>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[CT]\d+\])?")


def strip_prefix(line: str) -> str:
    """The message of a console or dmesg line: without level, timestamp and caller id.

    Leading spaces of the message are kept: they are what tells a call trace frame apart.
    """
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    end = m.end() if m else 0
    if not end:
        return line
    rest = line[end:]
    return rest[1:] if rest.startswith(" ") else rest


@dataclass(frozen=True)
class _Header:
    kind: str
    rule: str  # which title rule applies
    rx: re.Pattern[str]


def _h(kind: str, rule: str, pattern: str) -> _Header:
    return _Header(kind, rule, re.compile(pattern))


# Order matters: lockdep's "WARNING: possible ..." before WARNING, "BUG: KASAN:" before "BUG:".
_HEADERS = (
    _h("lockdep", "deadlock", r"^WARNING: (possible circular locking dependency|possible recursive locking) detected"),
    _h(
        "lockdep",
        "lockdep",
        r"^WARNING: (inconsistent lock state|possible irq lock inversion dependency detected"
        r"|\S+-safe -> \S+-unsafe lock order detected|bad unlock balance detected!|held lock freed!"
        r"|suspicious RCU usage|lock held when returning to user space!|Nested lock was not taken"
        r"|bad contention detected!|chain_key collision|\S+ still has locks held!)",
    ),
    _h("lockdep", "lockdep", r"^\[ BUG: (Invalid wait context) \]"),
    _h("soft_lockup", "soft_lockup", r"^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck for \d+s!"),
    _h("hard_lockup", "hard_lockup", r"^(?:watchdog: )?(?:CPU\d+: )?Watchdog detected hard LOCKUP on cpu \d+"),
    _h("rcu_stall", "rcu_stall", r"^(?:rcu: )?INFO: \w+ (?:self-)?detected (?:expedited )?stalls?\b"),
    _h("hung_task", "hung_task", r"^INFO: task .+:\d+ blocked for more than \d+ seconds"),
    _h("KASAN", "kasan", r"^BUG: KASAN: ([\w-]+)(?: in (\S+))?"),
    # A data race is a test failure, not a crash: without this it would be a generic "BUG:" (CRASH).
    _h("KCSAN", "kcsan", r"^BUG: KCSAN: ([\w-]+) in (\S+)(?: \[\w+\])?(?: / (\S+))?"),
    _h("kfence", "kfence", r"^BUG: KFENCE: ([\w -]+?)(?: in (\S+).*)?$"),
    _h("UBSAN", "ubsan", r"^UBSAN: (.+?) (?:in|at) (\S+)"),
    _h("WARNING", "warning", r"^WARNING: CPU: \d+ PID: \d+ at (?:\S+:\d+ )?(\S+)"),
    # 7.2 on (kernel/panic.c:__warn): "WARNING: [FILE:LINE ]at warn_write+0x3/0x6 [fault_inject], CPU#1: sh/75"
    _h("WARNING", "warning", r"^WARNING: (?:\S+:\d+ )?at (\S+)(?: \[\S+\])?, CPU#\d+: "),
    _h("BUG", "kernel_bug", r"^kernel BUG at (\S+?):\d+!"),
    _h("BUG", "kernel_bug", r"^Kernel BUG at (\S+)"),
    _h("oops", "bug", r"^BUG: (kernel NULL pointer dereference|unable to handle page fault)"),
    # arm64's fault report (arch/arm64/mm/fault.c:die_kernel_fault), then die()'s "Internal error: Oops: ESR [#1]"
    _h("oops", "arm64_fault", r"^Unable to handle kernel (NULL pointer dereference|paging request|execute from "
       r"non-executable memory|read from unreadable memory|write to read-only memory|access to user memory \w+)"
       r"(?: at virtual address)?"),
    _h("oops", "oops", r"^Internal error: (Oops(?: - [\w ]+?)?): [0-9a-f]+ \[#\d+\]"),
    # die(): "Oops: general protection fault, probably for ...: 0000 [#1] PREEMPT SMP NOPTI".
    _h("oops", "oops", r"^(?:Oops: )?([^:,]+?)(?:,[^:]*)?: [0-9a-f]{4} \[#\d+\]"),
    _h("panic", "panic", r"^Kernel panic - not syncing: ?(.*)"),
    _h("panic", "panic_in", r"^PANIC: (double fault)"),
    _h("kmemleak", "kmemleak", r"^(?:kmemleak: )?unreferenced object 0x[0-9a-f]+ \(size \d+\):"),
    _h("kmemleak", "kmemleak_summary", r"^kmemleak: \d+ new suspected memory leaks"),
    _h("BUG", "bug", r"^BUG: (.+)"),
)


# Every header holds one of these: a cheap test that spares most lines the regexes (and, with no splat open,
# spares a console's lines without any of them the scanner: SplatScanner.skip).
KEYWORDS = ("WARNING", "BUG", "INFO", "UBSAN", "LOCKUP", "[#", "panic", "PANIC", "kmemleak", "unreferenced object",
            "Unable to handle kernel")


def _match_header(msg: str) -> tuple[_Header, re.Match[str]] | None:
    if not any(w in msg for w in KEYWORDS):
        return None
    for h in _HEADERS:
        m = h.rx.match(msg)
        if m:
            return h, m
    return None


_PRELUDE = re.compile(r"^(?:-+\[ cut here \]-+|={20,}|sysrq: Trigger a crash)\s*$")
_SEPARATOR = re.compile(r"^={20,}\s*$")
# What the kernel prints after a splat's call trace that still belongs to it.
_TAIL = re.compile(
    r"^(?:\s*$|Modules linked in:|---\[ end trace|RIP: |Code: |RSP: |RAX: |RDX: |RBP: |R10: |R13: |FS: |CS: "
    r"|CR2: |DR[0-7]: |PKRU: |Kernel Offset: |note: \S+\[\d+\] exited with|Fixing recursive fault"
    r"|Disabling lock debugging due to kernel taint|irq event stamp: |(?:hard|soft)irqs last +(?:en|dis)abled at"
    r"|Shutting down cpus with NMI|CPU features: |Memory Limit: )"
)
# Lines that start another stack dump of the same splat (other CPUs of an RCU stall or lockup; the CPU
# that starves RCU's grace-period kthread).
_REOPEN = re.compile(
    r"^(?:NMI backtrace for cpu \d+|Sending NMI from CPU \d+ to CPUs|rcu: Stack dump where RCU GP kthread last ran:)"
)
_KIND_TAIL = {"rcu_stall": re.compile(r"^rcu: ")}
# QEMU's own messages share the console (its stderr), e.g. "terminating on signal 15": never a
# kernel's, they end any splat (the harness stops QEMU as soon as a panic starts printing).
_QEMU = re.compile(r"^qemu-system-\w+: ")
# After these the kernel prints nothing more.
_FINAL = re.compile(r"^(?:---\[ end Kernel panic|Rebooting in -?\d+ seconds)")


@dataclass
class _Open:
    """A splat being read."""

    header: _Header
    match: re.Match[str]
    line: int
    raw: list[str] = field(default_factory=list)
    msgs: list[str] = field(default_factory=list)
    fatal: bool = False
    in_tail: bool = False
    seen_oops: bool = False

    def add(self, raw: str, msg: str) -> None:
        self.raw.append(raw)
        self.msgs.append(msg)

    def snapshot(self) -> Splat:
        return Splat(
            kind=self.header.kind,
            title=title(self.header.kind, self.header.rule, self.match, self.msgs),
            fatal=self.fatal,
            text="\n".join(self.raw),
            line=self.line,
        )


class SplatScanner:
    """Incremental splat finder for a console read line by line.

    `feed()` returns a Splat when one starts (at its header line, so that a watcher can stop the VM
    while a panic still prints) and again when a running splat turns fatal (a panic follows an oops).
    Those are snapshots: their text holds only the lines read so far, and a title may still lack its
    function (an oops names it from the RIP line printed a few lines later). `finish()` closes the
    last splat and returns every splat with its full text and final title; call it at end of input.
    `find_splats(text)` is the same run over a whole log.
    """

    def __init__(self, keep: int | None = None) -> None:
        """keep: for a console that may print without end, how many splats to report and hold (a fatal
        one always is); past it the others are only counted, in `dropped`, at the cost of a line each."""
        self._n = 0
        self._cur: _Open | None = None
        self._done: list[Splat] = []
        self._keep = keep
        self._started = 0
        self._fatal_kept = False
        self.dropped = 0
        # Recent lines outside any splat, for the `[ cut here ]` printed before a header.
        self._recent: deque[tuple[int, str, str]] = deque(maxlen=3)

    def feed(self, line: str) -> Splat | None:
        """Read one line (a trailing newline is allowed). Past `keep` splats, only a fatal one is reported."""
        self._n += 1
        raw = line.rstrip("\r\n")
        msg = strip_prefix(raw)
        hit = _match_header(msg)
        if self._cur is not None:
            taken, event = self._continue(self._cur, raw, msg, hit)
            if taken:
                return event
        if hit is not None:
            return self._start(raw, msg, *hit)
        self._recent.append((self._n, raw, msg))
        return None

    @property
    def idle(self) -> bool:
        """No splat is being read: a line without a keyword (KEYWORDS) cannot start one."""
        return self._cur is None

    def skip(self, count: int, last: list[str]) -> None:
        """What feed() does with `count` lines that hold no keyword while the scanner is idle, without
        reading each: they are counted, and the last of them (`last`, up to 3) kept as a prelude may be."""
        assert self._cur is None, "skip() while a splat is open"
        first = self._n + count - len(last)
        self._n += count
        for i, raw in enumerate(last[-3:], start=first + 1 + max(len(last) - 3, 0)):
            raw = raw.rstrip("\r\n")
            self._recent.append((i, raw, strip_prefix(raw)))

    def finish(self) -> list[Splat]:
        """Close the splat being read, if any, and return all splats found so far, in input order."""
        if self._cur is not None:
            self._close()
        return list(self._done)

    def _continue(
        self, cur: _Open, raw: str, msg: str, hit: tuple[_Header, re.Match[str]] | None
    ) -> tuple[bool, Splat | None]:
        """Offer the line to the current splat: (whether it took it, the event to report)."""
        if hit is not None:
            header = hit[0]
            if header.rule == "panic":
                cur.add(raw, msg)
                cur.in_tail = False  # the panic prints its own stack dump next
                if not cur.fatal:
                    cur.fatal = True
                    return True, cur.snapshot()
                return True, None
            if header.rule == "oops" and cur.header.kind in ("oops", "BUG", "panic") and not cur.seen_oops:
                cur.seen_oops = True  # "BUG: kernel NULL pointer dereference" is followed by "Oops: ..."
                cur.add(raw, msg)
                return True, None
            if header.rule == "kmemleak_summary" and cur.header.kind == "kmemleak":
                cur.add(raw, msg)
                cur.in_tail = True
                return True, None
            self._close()
            return False, None
        if _QEMU.match(msg):
            self._close()
            return False, None
        if _FINAL.match(msg):
            cur.add(raw, msg)
            self._close()
            return True, None
        if not cur.in_tail:
            if cur.header.kind == "kmemleak" and not _kmemleak_body(msg):
                cur.in_tail = True
                return self._continue(cur, raw, msg, hit)
            cur.add(raw, msg)
            if _body_ends(cur.header.kind, msg):
                cur.in_tail = True
        elif _REOPEN.match(msg):  # before the tail: an RCU stall's tail takes any "rcu: " line
            cur.add(raw, msg)
            cur.in_tail = False
        elif _TAIL.match(msg) or (cur.header.kind in _KIND_TAIL and _KIND_TAIL[cur.header.kind].match(msg)):
            cur.add(raw, msg)
        else:
            self._close()
            return False, None
        if len(cur.raw) >= MAX_LINES:
            self._close()
        return True, None

    def _start(self, raw: str, msg: str, header: _Header, m: re.Match[str]) -> Splat | None:
        cur = _Open(header, m, self._n)
        # Take the prelude (and what lies between it and the header, e.g. the message of WARN()).
        recent = list(self._recent)
        for i in range(len(recent) - 1, -1, -1):
            if recent[i][0] != self._n - (len(recent) - i):
                break  # not contiguous with the header
            if _PRELUDE.match(recent[i][2]):
                cur.line = recent[i][0]
                for _, r, mm in recent[i:]:
                    cur.add(r, mm)
                break
        self._recent.clear()
        cur.add(raw, msg)
        cur.fatal = header.kind == "panic"
        self._cur = cur
        self._started += 1
        return cur.snapshot() if self._keep is None or self._started <= self._keep or cur.fatal else None

    def _close(self) -> None:
        assert self._cur is not None
        cur, self._cur = self._cur, None
        if self._keep is None or len(self._done) < self._keep or (cur.fatal and not self._fatal_kept):
            self._done.append(cur.snapshot())  # a title costs more than reading the splat: only for those kept
            self._fatal_kept |= cur.fatal
        else:
            self.dropped += 1


def find_splats(text: str) -> list[Splat]:
    """All splats of a whole console log or dmesg, in order."""
    scanner = SplatScanner()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        scanner.feed(line)
    return scanner.finish()


def is_allowed(splat: Splat, allow: Iterable[str]) -> bool:
    """Whether an allow-list entry (a regex, searched in the title) covers this splat."""
    return any(re.search(pattern, splat.title) for pattern in allow)


def _body_ends(kind: str, msg: str) -> bool:
    if kind in ("KASAN", "kfence"):
        return bool(_SEPARATOR.match(msg))  # their call traces come before the end of the report
    return msg.strip() == "</TASK>" or msg.startswith(("---[ end trace", "Kernel Offset: "))


def _kmemleak_body(msg: str) -> bool:
    msg = msg.removeprefix("kmemleak: ")
    return msg.startswith((" ", "\t"))
