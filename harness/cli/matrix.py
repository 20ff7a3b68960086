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

from harness.matrix import export, runner, spec
from harness.matrix.spec import MatrixError
from harness.results import rundir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrix", help="list, run or export a test matrix (configs/matrix/*.yaml)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    matrix_sub = p.add_subparsers(dest="matrix_command", required=True)

    s = matrix_sub.add_parser("list", help="the cells of a matrix, with their ids, timeouts and commands")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ids", action="store_true", help="print the cell ids only, one a line")
    s.set_defaults(func=list_cells)

    s = matrix_sub.add_parser("run", help="build each kernel once, run the cells in parallel VMs, write the report",
                              description="Exit status: 0 when every cell passed (or skipped), 1 otherwise, 2 for "
                              "a matrix that cannot be used, 130 when interrupted.")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--cell", action="append", default=[], metavar="ID", help="run only this cell; repeatable")
    s.add_argument("--jobs", type=int, default=None,
                   help=f"cells at once (default: min(CPUs, available GiB // 2), here {runner.default_jobs()})")
    s.add_argument("--run-dir", type=Path, default=None,
                   help="results directory (default: results/matrix-NAME/<time>, kept as history)")
    s.set_defaults(func=run)

    s = matrix_sub.add_parser("export", help="a CI configuration whose jobs are the cells, plus a merged report job")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--ci", required=True, choices=["github", "gitlab"])
    s.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    s.set_defaults(func=export_ci)


def list_cells(args: argparse.Namespace) -> int:
    m = spec.load(args.name)
    if args.ids:
        print("\n".join(c.id for c in m.cells))
        return 0
    print(f"matrix {m.name} ({m.path}): {len(m.cells)} cells" + (f"\n  {m.description}" if m.description else ""))
    width = max(len(c.id) for c in m.cells)
    for c in m.cells:
        print(f"  {c.id:<{width}}  {c.timeout_s:6.0f} s  {c.reproducer()}")
    return 0


def run(args: argparse.Namespace) -> int:
    m = spec.load(args.name)
    cells = m.select(args.cell)
    if args.jobs is not None and args.jobs < 1:
        raise MatrixError(f"--jobs must be at least 1, got {args.jobs}")
    run_dir = rundir.new_run_dir(args.run_dir, store=runner.store(m.name))
    return runner.Runner(m, cells, run_dir, args.jobs or runner.default_jobs()).run()


def export_ci(args: argparse.Namespace) -> int:
    text = export.export(spec.load(args.name), args.ci)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
