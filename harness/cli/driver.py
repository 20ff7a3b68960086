"""`harness driver NAME`: run one driver's suites on the machine its profile names; print a short verdict.

    harness driver NAME [--kernel-src KSRC] [--notifier on|off] [--results-dir DIR] [-k EXPR]
                        [--suite PATH]... [--guest-modules M,..] [--boot-timeout S]
    harness driver --list

NAME is a configs/drivers/NAME.yaml profile (test_hmm, kvm, virtio-gpu, mm-selftests, rxe). The run is
`harness run` with the profile's machine and suites, and every test's captured output (a kernel selftest's own log)
written into the JUnit XML. The verdict is the worst outcome of its tests, in the one severity order
of harness/results/outcome.py; XFAIL counts known kernel bugs, listed in the profile with their reason.
"""

from __future__ import annotations

import argparse
import sys

from harness.app.driver import DriverRequest, driver, list_drivers
from harness.cli import options
from harness.errors import EXIT_USER


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "driver", "run one driver's tests (configs/drivers/NAME.yaml); print a verdict",
                           *options.RUN_EXITS, description=__doc__)
    p.add_argument("name", nargs="?", metavar="NAME", help="a configs/drivers/ profile")
    p.add_argument("--list", action="store_true", help="list the driver profiles")
    options.add_kernel(p)
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("--suite", action="append", default=[], metavar="PATH",
                   help="run these suites instead of the profile's (repeatable)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        if not args.list:
            print("harness driver: name one of these (make driver DRIVER=NAME):", file=sys.stderr)
        profiles = list_drivers().profiles
        name_w, machine_w = max(len(p.name) for p in profiles), max(len(p.machine) for p in profiles)
        for p in profiles:
            print(f"{p.name:{name_w}} machine {p.machine:{machine_w}} {p.description}")
        return 0 if args.list else EXIT_USER
    kernel = options.kernel_choice(args)
    result = driver(DriverRequest(args.name, kernel, args.results_dir, args.k, args.boot_timeout,
                                  args.guest_modules, tuple(args.suite)))
    print(f"driver {result.profile.name}: {result.verdict.line()} on {result.release} (notifier {kernel.notifier}), "
          f"machine {result.profile.machine}")
    for note in result.verdict.notes:
        print(f"  {note}")
    print(f"results: {result.run.run_dir}")
    return result.exit_code
