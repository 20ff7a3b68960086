"""`harness post-mortem`: drgn on the vmcore a crash or a hang left, or its automatic analysis.

    harness post-mortem RESULT [--analyse]

RESULT is a results directory (a run, a matrix cell, a VM's vm-N/) or a vmcore. A CRASH or a TIMEOUT on a
kernel built with `--fragment debug/dump` leaves vm-N/vmcore (kdump-compressed), the vmlinux and modules
that read it, vmcore.json and analysis.txt. Without --analyse, drgn opens the one vmcore interactively
(`prog`, with its helpers loaded); with --analyse, each vmcore's analysis is written again and printed: the
task that panicked (or every task in D state) with its stack, its mm's notifier subscriptions, and the probe
module's counters and mirrors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from harness.app.post_mortem import post_mortem
from harness.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "post-mortem", "drgn on the vmcore of a crash or a hang, or its analysis",
                           (0, "done"), description=__doc__)
    p.add_argument("result", type=Path, help="a results directory or a vmcore")
    p.add_argument("--analyse", action="store_true", help="print each vmcore's analysis instead of opening drgn")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    found = post_mortem(args.result, args.analyse)
    for text in found.analyses:
        print(text)
    if found.drgn:
        print(shlex.join(found.drgn), file=sys.stderr, flush=True)
        os.execv(found.drgn[0], found.drgn)  # drgn's own prompt, in this terminal
    return 0
