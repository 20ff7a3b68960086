"""`harness compare`: a tree against the same tree plus a patch series; what the series changes.

    harness compare [--base KSRC] [--base-patch FILE]... (--patch FILE|A..B ... | --patched KSRC) [--notifier on|off]
                    [--fragment NAME]... [--machine M] [--driver NAME]... [--expect-events FILE]
                    [--results-dir DIR] [-k EXPR] [--boot-timeout S] [SUITES...]

--base defaults to Debian's 6.12; a git tree is compared at its HEAD (a snapshot in the cache).
--patch takes `git format-patch` files, an mbox of a series (`git format-patch --stdout`, `b4 am`'s .mbx;
a cover letter is skipped), or A..B of a git base, applied in order, as bytes, to a copy of the base; a
series naming any path outside the tree is refused whole before anything is touched. The patched kernel
is built on a copy of the base's build, so an unchanged file costs nothing. --patched takes a second tree
instead. --base-patch puts patches under the series, in the base (a fix the series builds on): both
kernels carry them.

Both kernels run the same suites in one sitting, one after the other, group by group: by default the
event, migration and observer suites and every driver profile the base's config supports; with
SUITES, those suites and the --driver profiles named. The report is plain text on stdout (for a mail
to the list); compare.txt, compare.md and compare.json are in the results directory, with every run
of both kernels under base/ and patched/.

--expect-events FILE (YAML) states the event changes the series intends:
    changes:
      - {case: "mprotect/*", from: PROTECTION_VMA, to: CLEAR}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.app.compare import DEFAULT_SUITES, CompareRequest, run_compare
from harness.cli import options
from harness.cli.output import progress_to_stderr
from harness.errors import EXIT_CHANGED

EXITS = ((0, "nothing changed"),
         (1, "a regression: a test that now fails, a new kernel splat, a completeness check that fails, an event "
             "change that --expect-events does not allow, or an intended change that did not happen"),
         (EXIT_CHANGED, "only notifier events changed (the report shows which)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "compare", "a tree against the same tree plus a series: what changed (exit 0/1/3)",
                           *EXITS, description=__doc__)
    p.add_argument("--base", default=None, metavar="KSRC", help="the base tree (default: Debian's 6.12)")
    p.add_argument("--base-patch", action="append", default=[], metavar="FILE|A..B",
                   help="patches the base itself carries, under the series (a fix the series needs; repeatable)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--patch", action="append", default=[], metavar="FILE|A..B",
                       help="a patch, an mbox of a series, or a commit range of a git base (repeatable, in order)")
    which.add_argument("--patched", metavar="KSRC", help="a second tree to compare against the base")
    p.add_argument("--notifier", default="on", choices=("on", "off"), help="the CONFIG_MMU_NOTIFIER axis")
    p.add_argument("--fragment", action="append", default=[], metavar="NAME", help="an extra config fragment")
    options.add_arch(p)
    options.add_machine(p)
    p.add_argument("--driver", action="append", default=[], metavar="NAME",
                   help="a configs/drivers profile to run on both (repeatable; default with no SUITES: all "
                        "the config supports)")
    p.add_argument("--expect-events", type=Path, metavar="FILE", help="the event changes the series intends")
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("suites", nargs="*", help=f"suites to run on both (default: {' '.join(DEFAULT_SUITES)})")
    p.set_defaults(func=main)


def request(args: argparse.Namespace) -> CompareRequest:
    return CompareRequest(args.base, tuple(args.base_patch), tuple(args.patch), args.patched, args.notifier,
                          tuple(args.fragment), args.machine, tuple(args.driver), tuple(args.suites),
                          args.expect_events, args.results_dir, args.k, args.boot_timeout, args.guest_modules,
                          args.arch)


def main(args: argparse.Namespace) -> int:
    with progress_to_stderr():  # builds, snapshots, pytest: stdout is the report's (for a mail) alone
        result = run_compare(request(args))
    print(result.text, end="")
    print(f"results: {result.out_dir}", file=sys.stderr)
    return result.exit_code
