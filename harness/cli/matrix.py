"""`harness matrix list|run|export` and `harness report`: test matrices, CI configurations, reports.

    harness matrix list NAME [--ids]
    harness matrix run NAME [--cell ID]... [--jobs N] [--run-dir DIR]
    harness matrix export NAME --ci github|gitlab [-o FILE]
    harness report RUN_DIR [--compare [PREV]]

NAME is configs/matrix/NAME.yaml (or the path of a matrix file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from harness.matrix import export as ci_export
from harness.matrix import runner as matrix_run
from harness.matrix import spec as matrix
from harness.matrix.spec import MatrixError
from harness.results import report
from harness.results.report import ReportError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `matrix` (list, run, export) and `report`; each sets `func`, which returns the exit code."""
    p = subparsers.add_parser("matrix", help="list, run or export a test matrix (configs/matrix/*.yaml)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="matrix_command", required=True)

    s = sub.add_parser("list", help="the cells of a matrix, with their ids, timeouts and commands")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ids", action="store_true", help="print the cell ids only, one a line")
    s.set_defaults(func=_user_errors(cmd_list))

    s = sub.add_parser("run", help="build each kernel once, run the cells in parallel VMs, write the report",
                       description="Exit status: 0 when every cell passed (or skipped), 1 otherwise, 2 for a "
                       "matrix that cannot be used, 130 when interrupted.")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--cell", action="append", default=[], metavar="ID", help="run only this cell; repeatable")
    s.add_argument("--jobs", type=int, default=None,
                   help="cells at once (default: min(CPUs, available GiB // 2), here "
                   f"{matrix_run.default_jobs()})")
    s.add_argument("--run-dir", type=Path, default=None,
                   help="results directory (default: results/matrix-NAME/<time>, kept as history)")
    s.set_defaults(func=_user_errors(cmd_run))

    s = sub.add_parser("export", help="a CI configuration whose jobs are the cells, plus a merged report job")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ci", required=True, choices=["github", "gitlab"])
    s.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    s.set_defaults(func=_user_errors(cmd_export))

    r = subparsers.add_parser("report", help="merged JUnit, summary.json and report.html for a run directory",
                              description="Write report.html, summary.json and (for a matrix run) a merged "
                              "junit.xml into RUN_DIR. With --compare, also compare with a previous run (a "
                              "directory, or by default the run before RUN_DIR in the same results store) and "
                              "exit 1 if anything regressed.")
    r.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    r.add_argument("--compare", nargs="?", const="previous", default=None, metavar="PREV",
                   help="a previous run directory (default: the one before RUN_DIR in its store)")
    r.set_defaults(func=_user_errors(cmd_report))


Handler = Callable[[argparse.Namespace], int]


def _user_errors(handler: Handler) -> Handler:
    """One paragraph on stderr and exit status 2 for what the user can fix."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (MatrixError, ReportError) as e:
            print(f"harness: {e}", file=sys.stderr)
            return 2

    run.__doc__ = handler.__doc__
    return run


def cmd_list(args: argparse.Namespace) -> int:
    m = matrix.load(args.name)
    if args.ids:
        print("\n".join(c.id for c in m.cells))
        return 0
    print(f"matrix {m.name} ({m.path}): {len(m.cells)} cells" + (f"\n  {m.description}" if m.description else ""))
    width = max(len(c.id) for c in m.cells)
    for c in m.cells:
        print(f"  {c.id:<{width}}  {c.timeout_s:6.0f} s  {c.reproducer()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    m = matrix.load(args.name)
    cells = m.select(args.cell)
    if args.jobs is not None and args.jobs < 1:
        raise MatrixError(f"--jobs must be at least 1, got {args.jobs}")
    run_dir = args.run_dir or matrix_run.new_run_dir(m.name)
    return matrix_run.Runner(m, cells, run_dir, args.jobs or matrix_run.default_jobs()).run()


def cmd_export(args: argparse.Namespace) -> int:
    text = ci_export.export(matrix.load(args.name), args.ci)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    comparison = None
    if args.compare:
        prev = report.previous_run(args.run_dir) if args.compare == "previous" else Path(args.compare)
        if prev is None:
            print(f"no earlier run next to {args.run_dir.resolve()} to compare with", file=sys.stderr)
        else:
            comparison = report.compare(report.load_run(prev), report.load_run(args.run_dir))
    summary = report.write_report(args.run_dir, comparison)
    if comparison:
        print(report.format_comparison(comparison))
    print(report.format_summary(summary))
    return 1 if comparison and comparison["regressed"] else 0
