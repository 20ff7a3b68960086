"""A run's results as KTAP v1 (`harness run --ktap`), so that kselftest-style runners read us as we read them.

    KTAP version 1
    1..3
    ok 1 mmu_notifier.notifier_events.munmap_sends_one_unmap_covering_the_range
    ok 2 mmu_notifier.migration.cow # XFAIL mm/memory.c:... (the known kernel bug)
    not ok 3 mmu_notifier.events.mprotect_rw-ro # CRASH kernel panic: ...
    # Totals: pass:1 fail:1 xfail:1 xpass:0 skip:0 error:0

Names are the KCIDB paths (harness/results/kcidb.py). Directives are kselftest.h's (ksft_test_result_code):
SKIP and XFAIL on an `ok` line; a `not ok` line carries our outcome (FAIL, ERROR, TIMEOUT, CRASH, INFRA) and its
one-line reason as the diagnostic. The totals line is kselftest's; ERROR, TIMEOUT, CRASH and INFRA count as error.
"""

from __future__ import annotations

from harness.results.kcidb import test_path
from harness.results.model import Result
from harness.results.outcome import Outcome


def _text(reason: str) -> str:
    return " ".join(reason.split())[:300]  # one line: a KTAP result line ends at the newline


def render(results: list[Result], comment: str = "") -> str:
    lines = ["KTAP version 1", f"1..{len(results)}"]
    if comment:
        lines.append(f"# {_text(comment)}")
    totals = dict.fromkeys(("pass", "fail", "xfail", "xpass", "skip", "error"), 0)
    for n, r in enumerate(results, 1):
        name, reason = test_path(r.test), _text(r.reason)
        if r.outcome == Outcome.PASS:
            lines.append(f"ok {n} {name}")
            totals["pass"] += 1
        elif r.outcome in (Outcome.SKIP, Outcome.XFAIL):
            lines.append(f"ok {n} {name} # {r.outcome.value} {reason}".rstrip())
            totals[r.outcome.value.lower()] += 1
        else:
            lines.append(f"not ok {n} {name} # {r.outcome.value} {reason}".rstrip())
            totals["fail" if r.outcome == Outcome.FAIL else "error"] += 1
    lines.append("# Totals: " + " ".join(f"{k}:{v}" for k, v in totals.items()))
    return "\n".join(lines) + "\n"
