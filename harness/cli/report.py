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

from harness.cli.output import progress_to_stderr
from harness.results import kcidb, load, regressions, report, summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="merged JUnit, summary.json and report.html for a run directory",
                       description="Write report.html, summary.json and (for a matrix run) a merged junit.xml into "
                       "RUN_DIR. With --compare, also look for regressions since a previous run (a directory, or by "
                       "default the run before RUN_DIR in its results store) and exit 1 if anything regressed. "
                       "(Not `harness compare`, which compares a tree with the tree plus a patch series.)")
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
    if args.kcidb:
        doc = kcidb.write(args.run_dir, args.kcidb, args.kcidb_url)
        print(f"wrote {args.kcidb}: KCIDB v{doc['version']['major']}.{doc['version']['minor']}, "
              f"{len(doc['checkouts'])} checkout(s), {len(doc['builds'])} build(s), {len(doc['tests'])} test(s)",
              file=sys.stderr)
        if (args.run_dir / "compare.json").exists():  # `harness compare` writes its own reports
            return 0
    found = None
    with progress_to_stderr():  # stdout is the summary's (and the regressions') alone
        if args.compare:
            prev = load.previous_run(args.run_dir) if args.compare == "previous" else Path(args.compare)
            if prev is None:
                print(f"no earlier run next to {args.run_dir.resolve()} to compare with", file=sys.stderr)
            else:
                found = regressions.find_regressions(load.load_run(prev), load.load_run(args.run_dir))
        written = report.write_report(args.run_dir, found)
    if found:
        print(regressions.format_regressions(found))
    print(summary.format_summary(written))
    return 1 if found and found["regressed"] else 0
