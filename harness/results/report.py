"""The report of a run directory: the files `harness report` and the matrix runner write into it.

    report.html    the matrix as a grid (cell x suite), failures with reproducers, slowest tests, plots (html.py)
    summary.json   the schema in README.md ("Matrix runs and reports"): schema.Summary (summary.py)
    junit.xml      every cell's tests in one file, one <testsuite> per cell (merged_junit below)

The run is read by load.py; what changed since an earlier run is regressions.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.atomic import write_text
from harness.results import junit, stability
from harness.results.html import render_html
from harness.results.load import CELL_ENTRY, RunReport, entries, load_run
from harness.results.rundir import RunDir
from harness.results.schema import Regressions, Summary
from harness.results.summary import build_summary


def merged_junit(run: RunReport) -> ET.Element:
    """One <testsuite> per cell, test classnames prefixed with the cell id so that CI tells them apart."""
    suites = []
    for c in run.cells:
        suite = junit.Suite(c.id, {**c.cell.values(), "outcome": c.outcome.value, "reproducer": c.reproducer})
        for case in junit.read_cases(RunDir(run.dir / c.dir).junit):
            case.element.set("classname", f"{c.id}.{case.classname}".rstrip("."))
            suite.cases.append(case.element)
        if CELL_ENTRY in entries(c):
            suite.add_error(c.id, CELL_ENTRY, c.duration_s or 0, f"{c.outcome}: {c.reason}",
                            f"{c.reason}\nreproduce: {c.reproducer}")
        suites.append(suite)
    return junit.merged(f"matrix {run.matrix}" if run.matrix else "harness run", suites)


def write_report(run_dir: Path, regressions: Regressions | None = None) -> Summary:
    """Write summary.json, junit.xml (merged, matrix runs only) and report.html; return the summary."""
    run = load_run(run_dir)
    summary = build_summary(run, regressions, stability.unstable(run) if run.kind == "matrix" else [])
    out = Path(run_dir)
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    if run.kind == "matrix":  # a plain run's own junit.xml is already the whole story
        junit.write(out / "junit.xml", merged_junit(run))
    write_text(out / "report.html", render_html(run, summary))
    return summary
