"""`harness`: a thin CLI over the application layer (harness/app/), one module per command in harness/cli/.

Each command module has `register(subparsers)`, which sets `func` (args -> exit status); `func` parses its
arguments into the use case's request, calls it, and prints the result. Failures are caught once, here
(harness/app/failures.py): bad input, an infrastructure failure or a fault of the machine is one paragraph
on stderr and its exit status, never a traceback. `--record FILE` also writes how the command ended as JSON
(an ExitRecord: exit status, kind of failure, message), which a CI or the matrix runner reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.app.failures import failure_of
from harness.cli import (
    bench,
    bisect,
    compare,
    config,
    driver,
    evidence,
    fuzz,
    kernel,
    matrix,
    options,
    post_mortem,
    report,
    run,
    shell,
    trace,
)
from harness.results.model import ExitRecord

COMMANDS = (kernel, run, shell, bench, config, matrix, report, trace, driver, evidence, compare, fuzz, bisect,
            post_mortem)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0],
                                epilog=options.exit_codes((0, "success"), (1, "a verdict: something failed (each "
                                                          "command's --help says what)"),
                                                          (3, "compare: only notifier events changed")),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", type=Path, default=None, metavar="FILE",
                   help="also write how the command ended to FILE as JSON: exit_status, kind (user, infra, "
                        "fault, interrupted, or empty for the command's own verdict) and message")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    record = ExitRecord(str(args.command), 0)
    try:
        record.exit_status = int(args.func(args))
    except BrokenPipeError:  # `harness matrix list | head`: the reader is gone, and so is the point of output
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- replaces the closed stream until exit
        record.exit_status = 1
    except (Exception, KeyboardInterrupt) as e:
        failure = failure_of(e)
        if failure is None:
            raise  # a bug: its traceback is the report
        print(f"harness: {failure.message}", file=sys.stderr)
        record.exit_status, record.kind, record.message = failure.exit_status, failure.kind, failure.message
    if args.record:
        record.write(args.record)
    return record.exit_status


if __name__ == "__main__":
    sys.exit(main())
