"""`harness driver NAME`: run one driver's suites on the machine its profile names; print a short verdict.

    harness driver NAME [--kernel-src DIR] [--notifier on|off] [--results-dir DIR] [-k EXPR]
                        [--suite PATH]... [--guest-modules M,..] [--boot-timeout S]
    harness driver --list

NAME is a configs/drivers/NAME.yaml profile (test_hmm, kvm, virtio-gpu). The run is `harness run` with
the profile's machine and suites, and every test's captured output (a kernel selftest's own log)
written into the JUnit XML. The verdict is the worst outcome of its tests (CRASH, TIMEOUT, INFRA,
ERROR, FAIL, then PASS); XFAIL counts known kernel bugs, listed in the profile with their reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from harness import paths
from harness.checks import drivers
from harness.kernel import kconfig
from harness.kernel import prepare as pipeline


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("driver", help="run one driver's tests (configs/drivers/NAME.yaml); print a verdict",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME", help="a configs/drivers/ profile")
    p.add_argument("--list", action="store_true", help="list the driver profiles")
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None,
                   help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    p.add_argument("--notifier", default="on", choices=["on", "off"], help="the CONFIG_MMU_NOTIFIER axis")
    p.add_argument("--results-dir", default=None)
    p.add_argument("-k", default=None, help="pytest -k expression")
    p.add_argument("--suite", action="append", default=[], metavar="PATH",
                   help="run these suites instead of the profile's (repeatable)")
    p.add_argument("--guest-modules", default="", help="extra guest modules to load at boot (fault_inject, ...)")
    p.add_argument("--boot-timeout", type=float, default=None)
    p.set_defaults(func=cmd_driver)


def fragment_notes(profile: drivers.DriverProfile, notifier: str, series: str, config: dict[str, str]) -> list[str]:
    """What the profile asks of the kernel that this build does not give (its tests will skip)."""
    applied = {f.name for f in pipeline.fragments_for(notifier, series)}
    notes = [f"fragment {f} is not applied on the notifier={notifier} axis" for f in profile.fragments
             if f not in applied]
    notes += [f"CONFIG_{sym} is not set in this kernel" for sym in profile.config
              if config.get(sym, "n") not in ("y", "m")]
    return notes


def cmd_driver(args: argparse.Namespace) -> int:
    from harness.cli import main as cli
    if args.list or not args.name:
        if not args.list:
            print("harness driver: name one of these (make driver DRIVER=NAME):", file=sys.stderr)
        for name in drivers.known_drivers():
            p = drivers.load_driver(name)
            print(f"{name:12} machine {p.machine:11} {p.description}")
        return 0 if args.list else 2
    try:
        profile = drivers.load_driver(args.name)
    except drivers.DriverError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    prepared = pipeline.prepare(args.kernel_src, args.notifier)
    for note in fragment_notes(profile, args.notifier, prepared.tree.series,
                               kconfig.read_config_values(prepared.build.config)):
        print(f"note: {note}: expect skips", flush=True)
    run_dir = paths.new_run_dir(args.results_dir)
    suites = args.suite or [str(paths.REPO / s) for s in profile.suites]
    run_args = argparse.Namespace(kernel_src=args.kernel_src, notifier=args.notifier, results_dir=str(run_dir),
                                  machine=profile.machine, k=args.k, boot_timeout=args.boot_timeout,
                                  guest_modules=args.guest_modules, suites=suites, fragment=[])
    # Every test's captured stdout (the kernel selftest logs) goes into its JUnit case.
    saved = os.environ.get("PYTEST_ADDOPTS")
    os.environ["PYTEST_ADDOPTS"] = f"{saved or ''} -o junit_logging=system-out".strip()
    try:
        rc = cli.cmd_run(run_args)
    finally:
        if saved is None:
            os.environ.pop("PYTEST_ADDOPTS", None)
        else:
            os.environ["PYTEST_ADDOPTS"] = saved
    verdict = drivers.verdict_from_junit(run_dir / "junit.xml")
    release = json.loads((run_dir / "kernel.json").read_text()).get("release", "?") \
        if (run_dir / "kernel.json").exists() else prepared.build.release
    print(f"driver {profile.name}: {verdict.line()} on {release} (notifier {args.notifier}), "
          f"machine {profile.machine}")
    for note in verdict.notes:
        print(f"  {note}")
    print(f"results: {run_dir}")
    return rc
