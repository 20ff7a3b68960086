"""The verdict on one program: what the executor found in the guest, what the probe's events say of each
operation's invalidations, and what the kernel log says.

fuzz_exec.c checks the mirrors itself (the device's view, the model mirrors, the notifier contract) and
stops at its first finding. The host adds completeness and event names: every page an operation must
invalidate (present before it; configs/fuzz.yaml says which operations and with which event) must be
inside an invalidation of the right event that the probe's classic notifier saw between the operation's
"seq0" and "seq1". And no kernel splat (harness/results/splat.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from harness.fuzz.program import WINDOWS, FuzzConfig, Program
from harness.results.events import Event
from harness.results.splat import find_splats

# What a finding is about, in the order a verdict prefers them when a program shows several: the
# executor's own finding comes first (it stopped there), a kernel splat next, then the host's checks.
CHECKS = ("crash", "device", "dev_write", "mirror", "contract", "splat", "completeness", "event", "hang", "executor")


@dataclass(frozen=True)
class Finding:
    check: str  # one of CHECKS
    op: int | None  # the operation's index in the program, when one is to blame
    detail: str
    op_text: str = ""
    title: str = ""  # a splat's or crash's title (harness/results/splat.py): "WARNING in dmirror_fault"

    @property
    def signature(self) -> str:
        """What makes two findings the same bug, for the shrinker and for deduplication: the check and the
        kind of operation (or the splat's title)."""
        if self.title:
            return f"{self.check}:{self.title}"
        return f"{self.check}:{self.op_text.split(' ', 1)[0] if self.op_text else '-'}" + (
            f" {self.op_text.split()[4]}" if self.op_text.startswith("advise") else "")

    def describe(self) -> str:
        where = f" at operation {self.op} (`{self.op_text}`)" if self.op is not None else ""
        return f"{self.check}{where}: {self.detail}"

    def to_json(self) -> dict:
        return {"check": self.check, "op": self.op, "op_text": self.op_text, "detail": self.detail,
                "title": self.title, "signature": self.signature}


@dataclass
class Outcome:
    """What one run of a program gave."""
    header: dict = field(default_factory=dict)
    ops: list[dict] = field(default_factory=list)  # the executor's line per operation
    finding: Finding | None = None
    done: bool = False
    # per operation index: the invalidations the program's own task made in its window, as
    # (event, start - op start, end - op start): what a base and a patched kernel are compared on
    events: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pcs: frozenset[int] = frozenset()  # with --kcov: the kernel code the program's own system calls ran

    def to_json(self) -> dict:
        return {"finding": self.finding.to_json() if self.finding else None, "done": self.done,
                "ops": len(self.ops), "notes": self.notes, "pcs": len(self.pcs),
                "events": {str(i): [list(e) for e in evs] for i, evs in self.events.items()}}


class ExecutorError(Exception):
    """fuzz_exec refused the program or said something that is not its protocol: the harness's bug."""


def parse_output(text: str) -> Outcome:
    """fuzz_exec's stdout, one JSON object a line (a last line cut short by a hang is dropped)."""
    out = Outcome()
    lines = text.splitlines()
    for n, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                out.notes.append(f"the executor's last line was cut short: {line[:200]!r}")
                break
            raise ExecutorError(f"fuzz_exec wrote a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(obj, dict):
            raise ExecutorError(f"fuzz_exec wrote {line[:200]!r}")
        if "pid" in obj and not out.header:
            out.header = obj
        elif "finding" in obj:
            out.finding = Finding(str(obj["finding"]), int(obj["i"]), str(obj.get("detail", "")))
        elif "done" in obj:
            out.done = True
        elif "pcs" in obj:
            try:
                out.pcs = frozenset(int(x, 16) for x in str(obj["pcs"]).split(",") if x)
            except ValueError:
                raise ExecutorError(f"fuzz_exec wrote PCs that are not hex: {line[:200]!r}") from None
        elif "stuck" in obj or "died" in obj:
            out.notes.append(f"fuzz_exec: {obj.get('stuck') or obj.get('died')}")
        elif "i" in obj:
            out.ops.append(obj)
        else:
            raise ExecutorError(f"fuzz_exec wrote {line[:200]!r}")
    return out


def judge(program: Program, out: Outcome, events: list[Event], dmesg: str, config: FuzzConfig) -> Outcome:
    """Fill in the verdict: the executor's finding, else a splat, else the first operation whose required
    invalidation is missing or of the wrong event."""
    texts = [op.text() for op in program]
    if out.finding and out.finding.op is not None and out.finding.op < len(texts):
        out.finding = Finding(out.finding.check, out.finding.op, out.finding.detail, texts[out.finding.op])
    pid = out.header.get("pid")
    page = int(out.header.get("page_size", 4096))
    mine = [e for e in events if e.pid == pid and e.sub == "mn" and e.kind == "start"]
    oldest = min((e.seq for e in events), default=0)
    for line in out.ops:
        i, start = int(line["i"]), int(line["start"])
        window = [e for e in mine if int(line["seq0"]) <= e.seq < int(line["seq1"])]
        # what the operation did to the areas: not the executor's own faults elsewhere (its stack, its data)
        out.events[i] = sorted((e.event, e.start - start, e.end - start) for e in window
                               if e.cpid == pid and e.start < WINDOWS[1] and e.end > WINDOWS[0])
        if out.finding is None and line.get("must") and line["ret"] == 0 and line["seq0"] >= 0:
            if line["seq0"] < oldest:
                out.notes.append(f"operation {i}: the probe's ring dropped its events; not judged")
                continue
            if found := _check_cover(line, window, page, config, texts[i] if i < len(texts) else line["op"]):
                out.finding = found
    if out.finding is None and (splats := find_splats(dmesg)):
        s = splats[0]
        out.finding = Finding("splat", last_op(out), f"{s.title}: {s.text.splitlines()[0][:200]}",
                              texts[last_op(out)] if out.ops and last_op(out) < len(texts) else "", s.title)
    return out


def last_op(out: Outcome) -> int:
    return int(out.ops[-1]["i"]) if out.ops else 0


def _check_cover(line: dict, window: list[Event], page: int, config: FuzzConfig, text: str) -> Finding | None:
    kind = f"advise {line['arg']}" if line["op"] == "advise" else line["op"]
    spec = config.events.get(kind)
    if spec is None:
        return None
    start = int(line["start"])
    missing, wrong = [], []
    for p in line["must"]:
        a = start + int(p) * page
        covering = [e for e in window if e.start <= a and a + page <= e.end]
        if not covering:
            missing.append(int(p))
        elif not any(e.event == spec["event"] for e in covering):
            wrong.append((int(p), sorted({e.event for e in covering})))
    seen = ", ".join(f"{e.event} [{e.start - start:+#x}, {e.end - start:+#x})" for e in window[:8]) or "none"
    if missing:
        return Finding("completeness", int(line["i"]),
                       f"{len(missing)} page(s) present before it were not invalidated: {_pages(missing)} from "
                       f"0x{start:x}; expected {spec['event']} ({spec['site']}); the operation's invalidations: {seen}",
                       text)
    if wrong:
        return Finding("event", int(line["i"]),
                       f"page(s) {_pages([p for p, _ in wrong])} were invalidated with {wrong[0][1]}, not "
                       f"{spec['event']} ({spec['site']}); the operation's invalidations: {seen}", text)
    return None


def _pages(pages: list[int]) -> str:
    shown = ", ".join(f"+{p}" for p in pages[:8])
    return shown + (f" and {len(pages) - 8} more" if len(pages) > 8 else "")
