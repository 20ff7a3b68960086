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
import json
import sys

from harness import paths
from harness.checks import drivers
from harness.cli import options
from harness.cli.options import KernelChoice
from harness.cli.run import RunRequest, run
from harness.kernel import kconfig
from harness.kernel.config import fragments_for
from harness.kernel.prepare import prepare
from harness.results import junit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("driver", help="run one driver's tests (configs/drivers/NAME.yaml); print a verdict",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME", help="a configs/drivers/ profile")
    p.add_argument("--list", action="store_true", help="list the driver profiles")
    options.add_kernel(p)
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("--suite", action="append", default=[], metavar="PATH",
                   help="run these suites instead of the profile's (repeatable)")
    p.set_defaults(func=main)


def fragment_notes(profile: drivers.DriverProfile, notifier: str, series: str, config: dict[str, str]) -> list[str]:
    """What the profile asks of the kernel that this build does not give (its tests will skip)."""
    applied = {f.name for f in fragments_for(notifier, series)}
    notes = [f"fragment {f} is not applied on the notifier={notifier} axis" for f in profile.fragments
             if f not in applied]
    notes += [f"CONFIG_{sym} is not set in this kernel" for sym in profile.config
              if config.get(sym, "n") not in ("y", "m")]
    return notes


def main(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        if not args.list:
            print("harness driver: name one of these (make driver DRIVER=NAME):", file=sys.stderr)
        for name in drivers.known_drivers():
            p = drivers.load_driver(name)
            print(f"{name:12} machine {p.machine:11} {p.description}")
        return 0 if args.list else 2
    profile = drivers.load_driver(args.name)
    kernel = KernelChoice.from_args(args)
    prepared = prepare(kernel.kernel_src, kernel.notifier, fragments=kernel.fragments)
    for note in fragment_notes(profile, kernel.notifier, prepared.tree.series,
                               kconfig.read_config_values(prepared.build.config)):
        print(f"note: {note}: expect skips", flush=True)
    suites = tuple(args.suite) or tuple(str(paths.REPO / s) for s in profile.suites)
    result = run(RunRequest(kernel, profile.machine, suites, args.results_dir, args.k, args.boot_timeout,
                            args.guest_modules))
    verdict = junit.run_verdict(result.run_dir)
    kernel_json = result.run_dir / "kernel.json"
    release = json.loads(kernel_json.read_text()).get("release", "?") if kernel_json.exists() \
        else prepared.build.release
    print(f"driver {profile.name}: {verdict.line()} on {release} (notifier {kernel.notifier}), "
          f"machine {profile.machine}")
    for note in verdict.notes:
        print(f"  {note}")
    print(f"results: {result.run_dir}")
    return result.exit_code
