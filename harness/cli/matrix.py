"""`harness matrix list|run|export`: test matrices and the CI configurations made from them.

    harness matrix list NAME [--ids]
    harness matrix run NAME [--cell ID]... [--jobs N] [--run-dir DIR]
    harness matrix export NAME --ci github|gitlab [-o FILE]

NAME is configs/matrix/NAME.yaml (or the path of a matrix file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.app.matrix import (
    MatrixExportRequest,
    MatrixRunRequest,
    default_jobs,
    matrix_export,
    matrix_list,
    matrix_run,
)
from harness.cli import options

RUN_EXITS = ((0, "every cell passed (or skipped)"),
             (1, "a cell did not pass (its outcome and reproducer are in the report)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "matrix", "list, run or export a test matrix (configs/matrix/*.yaml)",
                           (0, "done"), (1, "matrix run: a cell did not pass (a FLAKY cell is reported apart, "
                                         "not a failure)"), description=__doc__)
    matrix_sub = p.add_subparsers(dest="matrix_command", required=True)

    s = options.add_parser(matrix_sub, "list", "the cells of a matrix, with their ids, timeouts and commands",
                           (0, "listed"))
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ids", action="store_true", help="print the cell ids only, one a line")
    s.set_defaults(func=list_cells)

    s = options.add_parser(matrix_sub, "run", "build each kernel once, run the cells in parallel VMs, write the "
                           "report", *RUN_EXITS)
    s.add_argument("name", metavar="NAME")
    s.add_argument("--cell", action="append", default=[], metavar="ID", help="run only this cell; repeatable")
    s.add_argument("--jobs", type=int, default=None,
                   help=f"cells at once (default: min(CPUs, available GiB // 2), here {default_jobs()})")
    s.add_argument("--run-dir", type=Path, default=None,
                   help="results directory (default: results/matrix-NAME/<time>, kept as history)")
    s.set_defaults(func=run)

    s = options.add_parser(matrix_sub, "export", "a CI configuration whose jobs are the cells, plus a merged "
                           "report job", (0, "written"))
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ci", required=True, choices=["github", "gitlab"])
    s.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    s.set_defaults(func=export_ci)


def list_cells(args: argparse.Namespace) -> int:
    m = matrix_list(args.name).matrix
    if args.ids:
        print("\n".join(c.id for c in m.cells))
        return 0
    print(f"matrix {m.name} ({m.path}): {len(m.cells)} cells" + (f"\n  {m.description}" if m.description else ""))
    width = max(len(c.id) for c in m.cells)
    for c in m.cells:
        print(f"  {c.id:<{width}}  {c.timeout_s:6.0f} s  {c.reproducer()}")
    return 0


def run(args: argparse.Namespace) -> int:
    return matrix_run(MatrixRunRequest(args.name, tuple(args.cell), args.jobs, args.run_dir)).exit_code


def export_ci(args: argparse.Namespace) -> int:
    text = matrix_export(MatrixExportRequest(args.name, args.ci, args.output))
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
