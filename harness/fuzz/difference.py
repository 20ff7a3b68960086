"""Before a merge: the same programs on a base and a patched kernel, and each program whose verdict or
events differ. Only what a program determines is compared: the verdict's signature, and the invalidations
its own task made in the operations configs/fuzz.yaml names (their events, and their ranges from the
operation's start: the two guests place areas at different addresses). A difference is run once more on
both kernels and reported only if it shows again (THP allocation, reclaim and the like vary run to run).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

from harness.fuzz.campaign import Stats
from harness.fuzz.oracle import Outcome
from harness.fuzz.program import Generator, Program, render
from harness.fuzz.runner import FuzzGuest

Events = list[tuple[str, int, int]]


@dataclass
class Difference:
    index: int
    program: Program
    base_verdict: str
    patched_verdict: str
    ops: list[tuple[int, str, Events, Events]] = field(default_factory=list)  # index, text, base, patched

    def render(self) -> str:
        lines = [f"program {self.index}: verdict {self.base_verdict} -> {self.patched_verdict}"]
        for i, text, base, patched in self.ops[:10]:
            lines.append(f"  op {i} `{text}`: base {_events(base)}; patched {_events(patched)}")
        lines += ["  program:", *(f"    {line}" for line in render(self.program).splitlines())]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"index": self.index, "program": render(self.program), "base_verdict": self.base_verdict,
                "patched_verdict": self.patched_verdict,
                "ops": [{"i": i, "op": t, "base": b, "patched": p} for i, t, b, p in self.ops]}


def _events(events: Events) -> str:
    return ", ".join(f"{e} [{s:+#x}, {n:+#x})" for e, s, n in events) or "none"


def verdict(out: Outcome) -> str:
    return out.finding.signature if out.finding else "clean"


def compare_outcomes(index: int, program: Program, base: Outcome, patched: Outcome, kinds: set[str]) -> Difference:
    diff = Difference(index, program, verdict(base), verdict(patched))
    done = min(len(base.ops), len(patched.ops))  # the operations both ran
    for i in range(done):
        if program[i].kind() not in kinds:
            continue
        b, p = base.events.get(i, []), patched.events.get(i, [])
        if b != p:
            diff.ops.append((i, program[i].text(), b, p))
    return diff


def differs(d: Difference) -> bool:
    return d.base_verdict != d.patched_verdict or bool(d.ops)


def differ(base: FuzzGuest, patched: FuzzGuest, generator: Generator, seed: str, seconds: float,
           max_programs: int | None = None, stop_at_first: bool = False) -> tuple[list[Difference], Stats]:
    kinds = set(generator.config.events)
    stats = Stats()
    found: list[Difference] = []
    started = last = time.monotonic()
    k = 0
    while time.monotonic() - started < seconds and (max_programs is None or k < max_programs):
        program = generator.program(random.Random(f"{seed}:{k}"))
        runs = [base.run(program), patched.run(program)]
        stats.programs += 1
        stats.ops += len(program)
        stats.run_s += sum(r.seconds for r in runs)
        d = compare_outcomes(k, program, runs[0].outcome, runs[1].outcome, kinds)
        if differs(d):
            again = compare_outcomes(k, program, base.run(program).outcome, patched.run(program).outcome, kinds)
            if differs(again) and again.base_verdict == d.base_verdict and again.patched_verdict == d.patched_verdict:
                found.append(again if again.ops or not d.ops else d)
                print(f"fuzz: program {k} differs: {d.base_verdict} -> {d.patched_verdict}"
                      f"{f', {len(d.ops)} operation(s) with other events' if d.ops else ''}", file=sys.stderr,
                      flush=True)
                if stop_at_first:
                    break
        k += 1
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            print(f"fuzz: {last - started:.0f} s: {k} programs on both kernels, {len(found)} differ",
                  file=sys.stderr, flush=True)
    stats.boots = base.boots + patched.boots
    return found, stats
