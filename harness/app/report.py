"""The `report` use case: merged JUnit, summary.json and report.html for a run directory; a comparison with a
previous run; a KCIDB document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import kcidb, report


@dataclass(frozen=True)
class ReportRequest:
    run_dir: Path
    compare: str | None = None  # a previous run directory, or "previous": the run before run_dir in its store
    kcidb: Path | None = None  # also write a KCIDB v5.3 document here
    kcidb_url: str | None = None  # where run_dir is published (the document's URLs)


@dataclass(frozen=True)
class ReportResult:
    summary: report.Summary | None  # None: a `harness compare` directory, which writes its own reports
    comparison: report.Comparison | None = None
    no_previous: bool = False  # --compare asked for the previous run, and there was none
    kcidb: dict[str, Any] | None = None  # the KCIDB document written

    @property
    def exit_code(self) -> int:
        return 1 if self.comparison and self.comparison["regressed"] else 0


def write_report(req: ReportRequest) -> ReportResult:
    doc = kcidb.write(req.run_dir, req.kcidb, req.kcidb_url) if req.kcidb else None
    if doc is not None and (req.run_dir / "compare.json").exists():  # `harness compare` writes its own reports
        return ReportResult(None, kcidb=doc)
    comparison, no_previous = None, False
    if req.compare:
        prev = report.previous_run(req.run_dir) if req.compare == "previous" else Path(req.compare)
        if prev is None:
            no_previous = True
        else:
            comparison = report.compare(report.load_run(prev), report.load_run(req.run_dir))
    return ReportResult(report.write_report(req.run_dir, comparison), comparison, no_previous, doc)
