"""`harness run`: prepare the kernel, then run suites under pytest with every result in one directory.

    harness run [--kernel-src KSRC] [--notifier on|off] [--fragment NAME]... [--machine PROFILE]
                [--results-dir DIR] [-k EXPR] [--boot-timeout S] [--guest-modules M,...] [-j N] [--ktap]
                [SUITES...]

--ktap prints the results as KTAP v1 on stdout (harness/results/ktap.py), everything else on stderr.
-j N runs the tests on N pytest-xdist workers, each with VMs of its own, into the one results directory
(the pytest plugin merges outcomes.json, timings.json and JUnit). The default, 1, is what a matrix cell
runs: the matrix already runs its cells side by side.

Other commands run suites through harness/app/run.py, not through this command line.
"""

from __future__ import annotations

import argparse
import sys

from harness.app.run import RunRequest, run
from harness.cli import options
from harness.results import ktap


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "run", "build, boot and run the suites; print a summary", *options.RUN_EXITS,
                           description=__doc__)
    options.add_kernel(p)
    options.add_machine(p)
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N",
                   help="run the tests on N workers at once, each with VMs of its own (default 1)")
    p.add_argument("--reruns", type=int, default=None, metavar="N",
                   help="run a test that does not pass again, up to N times, each on a fresh guest; fail then pass "
                        "is FLAKY (default 1)")
    p.add_argument("--gdb-on-crash", action="store_true",
                   help="guests with QEMU's gdb stub (a private unix socket), held in their panic: at a crash the "
                        "gdb command that attaches is printed and the run waits for Enter (one worker)")
    p.add_argument("--fresh-guest", action="store_true",
                   help="every test on a guest no other test used: restored from the snapshot taken right after the "
                        "first boot (about 0.2 s a test); tests that change global state get one anyway")
    p.add_argument("--ktap", action="store_true",
                   help="print the results as KTAP v1 on stdout; pytest's output and the summary go to stderr")
    p.add_argument("suites", nargs="*", help="suite files or directories (default: suites/)")
    p.set_defaults(func=main)


def request(args: argparse.Namespace) -> RunRequest:
    return RunRequest(options.kernel_choice(args), args.machine, tuple(args.suites), args.results_dir, args.k,
                      args.boot_timeout, args.guest_modules, quiet=args.ktap, jobs=args.jobs, reruns=args.reruns,
                      gdb_on_crash=args.gdb_on_crash, fresh_guest=args.fresh_guest)


def main(args: argparse.Namespace) -> int:
    result = run(request(args))
    if args.ktap:
        print(result.summary, file=sys.stderr)
        sys.stdout.write(ktap.render(result.results, f"mmu-notifier-harness: results in {result.run_dir}"))
    else:
        print(result.summary)
    return result.exit_code


def _jobs(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: needs at least 1 worker")
    return n
