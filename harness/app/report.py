"""The `report` use case: merged JUnit, summary.json and report.html for a run directory; the regressions since a
previous run (harness/results/regressions.py); a KCIDB document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import kcidb, load, regressions, report
from harness.results.schema import Regressions, Summary


@dataclass(frozen=True)
class ReportRequest:
    run_dir: Path
    compare: str | None = None  # regressions since a previous run directory, or "previous": the run before in its store
    kcidb: Path | None = None  # also write a KCIDB v5.3 document here
    kcidb_url: str | None = None  # where run_dir is published (the document's URLs)


@dataclass(frozen=True)
class ReportResult:
    summary: Summary | None  # None: a `harness compare` directory, which writes its own reports
    regressions: Regressions | None = None
    no_previous: bool = False  # --compare asked for the previous run, and there was none
    kcidb: dict[str, Any] | None = None  # the KCIDB document written

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions and self.regressions["regressed"] else 0


def write_report(req: ReportRequest) -> ReportResult:
    doc = kcidb.write(req.run_dir, req.kcidb, req.kcidb_url) if req.kcidb else None
    if doc is not None and (req.run_dir / "compare.json").exists():  # `harness compare` writes its own reports
        return ReportResult(None, kcidb=doc)
    found, no_previous = None, False
    if req.compare:
        prev = load.previous_run(req.run_dir) if req.compare == "previous" else Path(req.compare)
        if prev is None:
            no_previous = True
        else:
            found = regressions.find_regressions(load.load_run(prev), load.load_run(req.run_dir))
    return ReportResult(report.write_report(req.run_dir, found), found, no_previous, doc)
