"""summary.json of a run (schema.py) and the summary `harness report` and `harness matrix` print."""

from __future__ import annotations

import time
from pathlib import Path

from harness.results.load import RunReport, count_outcomes, entries
from harness.results.outcome import FAILED, Outcome
from harness.results.schema import SCHEMA, Failure, Regressions, Slow, Summary, Unstable
from harness.results.visible import visible

SLOWEST = 10


def build_summary(run: RunReport, regressions: Regressions | None = None,
                  unstable: list[Unstable] | None = None) -> Summary:
    failures: list[Failure] = []
    infra: list[Failure] = []
    flaky: list[Failure] = []
    for c in run.cells:
        for e in entries(c).values():
            if e.outcome in FAILED or e.outcome in (Outcome.INFRA, Outcome.FLAKY):
                (infra if e.outcome == Outcome.INFRA else flaky if e.outcome == Outcome.FLAKY else failures).append(
                    {"cell": c.id, "test": e.name, "outcome": e.outcome.value, "reason": e.reason,
                     "reproducer": e.reproducer, "log": e.console_log or c.log})
    tests = [t for c in run.cells for t in c.tests]
    slowest = sorted((Slow(cell=c.id, test=t.name, outcome=t.outcome.value, duration_s=t.duration_s)
                      for c in run.cells for t in c.tests), key=lambda t: -t["duration_s"])[:SLOWEST]
    meta = run.record
    return {
        "schema": SCHEMA, "kind": run.kind, "matrix": run.matrix, "run_dir": str(run.dir),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started": meta.started,
        "finished": meta.finished, "duration_s": meta.duration_s,
        "totals": {"cells": len(run.cells), "cell_outcomes": count_outcomes([c.outcome for c in run.cells]),
                   "tests": len(tests), "test_outcomes": count_outcomes([t.outcome for t in tests]),
                   "failures": len(failures), "infra": len(infra), "flaky": len(flaky)},
        "builds": [b.to_json() for b in meta.builds],
        "cells": [c.to_json() for c in run.cells],
        "failures": failures, "infra": infra, "flaky": flaky, "unstable": unstable or [], "slowest": slowest,
        "comparison": regressions,
    }


def format_summary(summary: Summary) -> str:
    """The totals, then each failure with its reproducer, then where the page is."""
    t = summary["totals"]
    cells = ", ".join(f"{n} {o}" for o, n in t["cell_outcomes"].items())
    tests = ", ".join(f"{n} {o}" for o, n in t["test_outcomes"].items())
    lines = [f"cells: {t['cells']} ({cells}); tests: {t['tests']} ({tests or 'none'})"]
    for title, items in (("failures", summary["failures"]), ("infrastructure (not test failures)", summary["infra"]),
                         ("FLAKY (failed, then passed on a fresh guest)", summary["flaky"])):
        if items:
            lines.append(f"{title}:")
            for f in items:
                lines += [f"  {f['outcome']:<7} {f['cell']} :: {f['test']}: {f['reason'].splitlines()[0][:200]}"
                          if f["reason"] else f"  {f['outcome']:<7} {f['cell']} :: {f['test']}",
                          f"          reproduce: {f['reproducer']}"]
    if summary["unstable"]:
        lines.append("unstable (FLAKY too often in the runs before; a failure of theirs is not news):")
        lines += [f"  {u['cell']} :: {u['test']}: FLAKY in {u['flaky']} of the last {u['runs']} runs"
                  for u in summary["unstable"]]
    lines.append(f"report: {Path(summary['run_dir']) / 'report.html'}")
    return visible("\n".join(lines))  # a reason is guest output: no escape sequences reach the terminal
