"""`harness bisect`: the commit between a good and a bad one that makes a check fail, in a git repository.

    harness bisect --good REV --bad REV [--kernel-src GITTREE] [--events CASE | --completeness | --splat REGEX]
                   [--retries N] [--notifier on|off] [--fragment NAME]... [--machine M] [-k EXPR]
                   [--boot-timeout S] [--results-dir DIR] [SUITES...]

The check (default: a test of SUITES that does not pass):
    --events CASE      the notifier events of a workload/case matching CASE ("munmap/*") differ from the
                       good commit's, by `harness compare`'s rules
    --completeness     a completeness check fails: a page moved without an invalidation
    --splat REGEX      a kernel splat whose title matches REGEX ("WARNING in dmirror_.*") is on a console

GITTREE (default: the working directory) is only read: git bisect runs in a clone of the harness's own
(objects shared, in the cache), whose build directory each step rebuilds incrementally. Both ends are built
and judged first (--good must hold, --bad must fail), then ⌈log2 n⌉ commits or so. A commit that does not
build or boot is skipped with the reason; with --retries N (default 1) every verdict is seen 1+N times, and
one that flips is FLAKY and skipped, never guessed. Each step's build, boot and test times show as it
goes. The results directory holds every step's runs (steps/), bisect.json, culprit.txt, bisect.log
(`git bisect replay` takes it) and the culprit as KCIDB (kcidb.json).
"""

from __future__ import annotations

import argparse
import os
import sys

from harness.app.bisect import EXIT_FOUND, EXIT_UNDECIDED, BisectRequest, run_bisect
from harness.bisect.judge import Check
from harness.cli import options
from harness.cli.output import progress_to_stderr

EXITS = ((EXIT_FOUND, "the first bad commit was found (stdout says which)"),
         (EXIT_UNDECIDED, "no single first bad commit: commits that did not build or boot, or were FLAKY, "
                          "leave several candidates (listed)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "bisect", "the commit that makes a check fail, between a good and a bad one",
                           *EXITS, description=__doc__)
    p.add_argument("--good", required=True, metavar="REV", help="a commit where the check holds")
    p.add_argument("--bad", required=True, metavar="REV", help="a later commit where it fails")
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None, metavar="GITTREE",
                   help="the kernel's git repository (default: the working directory; env KSRC)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--events", metavar="CASE", help="check: the events of workloads matching CASE change")
    which.add_argument("--completeness", action="store_true", help="check: a completeness check fails")
    which.add_argument("--splat", metavar="REGEX", help="check: a splat whose title matches REGEX")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="see each verdict N more times; one that flips is FLAKY (default 1)")
    p.add_argument("--notifier", default="on", choices=("on", "off"), help="the CONFIG_MMU_NOTIFIER axis")
    p.add_argument("--fragment", action="append", default=[], metavar="NAME", help="an extra config fragment")
    options.add_arch(p)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("-k", default=None, metavar="EXPR", help="pytest -k expression")
    p.add_argument("--boot-timeout", type=float, default=None, metavar="S",
                   help="seconds from QEMU start to the ready marker")
    p.add_argument("suites", nargs="*", help="the suites each step runs (default: all of suites/)")
    p.set_defaults(func=main)


def check(args: argparse.Namespace) -> Check:
    if args.events:
        return Check("events", args.events)
    if args.completeness:
        return Check("completeness")
    if args.splat:
        return Check("splat", args.splat)
    return Check("test")


def main(args: argparse.Namespace) -> int:
    req = BisectRequest(args.good, args.bad, check(args), args.kernel_src, tuple(args.suites), args.k, args.notifier,
                        tuple(args.fragment), args.machine, args.retries, args.results_dir, args.boot_timeout,
                        args.arch)
    with progress_to_stderr():  # builds and runs: stdout is the verdict's
        result = run_bisect(req)
    print(result.text(), end="")
    print(f"results: {result.out_dir}", file=sys.stderr)
    return result.exit_code
