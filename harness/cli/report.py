"""`harness report RUN_DIR [--compare [PREV]] [--kcidb FILE [--kcidb-url URL]]`: merged JUnit, summary.json and
report.html for a run directory.

With --compare, also look for regressions since a previous run (a directory, or by default the run before
RUN_DIR in the same results store: harness/results/regressions.py) and exit 1 if anything regressed. The
flag keeps its name; it is not `harness compare`, which compares a tree with the tree plus a patch series.
With --kcidb, also write the run as a KCIDB v5.3 document (harness/results/kcidb.py); RUN_DIR may then also
be a `harness compare` directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.app.report import ReportRequest, write_report
from harness.cli import options
from harness.cli.output import progress_to_stderr
from harness.results import regressions, summary

EXITS = ((0, "written (and, with --compare, nothing regressed)"), (1, "--compare: something regressed since PREV"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "report", "merged JUnit, summary.json and report.html for a run directory", *EXITS,
                           description="Write report.html, summary.json and (for a matrix run) a merged junit.xml "
                           "into RUN_DIR. With --compare, also look for regressions since a previous run (a directory, "
                           "or by default the run before RUN_DIR in its results store) and exit 1 if anything "
                           "regressed. (Not `harness compare`, which compares a tree with the tree plus a patch "
                           "series.)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--compare", nargs="?", const="previous", default=None, metavar="PREV",
                   help="look for regressions since a previous run directory (default: the one before RUN_DIR in its "
                        "store); exit 1 if any")
    p.add_argument("--kcidb", type=Path, default=None, metavar="FILE",
                   help="also write the results as a KCIDB v5.3 JSON document (for kcidb-submit)")
    p.add_argument("--kcidb-url", default=None, metavar="URL",
                   help="where RUN_DIR is published: the document's log and config URLs are URL/<path in RUN_DIR> "
                        "(default: file:// URLs of this machine)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    with progress_to_stderr():  # stdout is the summary's (and the regressions') alone
        result = write_report(ReportRequest(args.run_dir, args.compare, args.kcidb, args.kcidb_url))
    if doc := result.kcidb:
        print(f"wrote {args.kcidb}: KCIDB v{doc['version']['major']}.{doc['version']['minor']}, "
              f"{len(doc['checkouts'])} checkout(s), {len(doc['builds'])} build(s), {len(doc['tests'])} test(s)",
              file=sys.stderr)
    if result.no_previous:
        print(f"no earlier run next to {args.run_dir.resolve()} to compare with", file=sys.stderr)
    if result.regressions:
        print(regressions.format_regressions(result.regressions))
    if result.summary is not None:
        print(summary.format_summary(result.summary))
    return result.exit_code
