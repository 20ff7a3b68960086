"""`harness`: a thin CLI over the pipeline (kernel, image, run, shell, bench, config)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import paths
from harness.atomic import OutputDirError, check_output_dir
from harness.checks import evidence
from harness.cli import config as config_cli
from harness.cli import driver as driver_cli
from harness.cli import matrix as matrix_cli
from harness.kernel import prepare as pipeline
from harness.kernel.build import BuildError
from harness.kernel.kconfig import ConfigError
from harness.kernel.source import SourceError
from harness.observe import trace
from harness.vm.machine import VM, BootError, MachineError, check_devices, load_profile, probe_accel
from harness.vm.ssh import SSHError

# Errors that are the user's input or the machine's state, not a harness bug: one paragraph, exit 2.
USER_ERRORS = (ConfigError, SourceError, BuildError, MachineError, BootError, SSHError, OutputDirError)


def _kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None,
                   help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    p.add_argument("--notifier", default="on", choices=["on", "off"], help="the CONFIG_MMU_NOTIFIER axis")
    p.add_argument("--fragment", action="append", default=[], metavar="NAME",
                   help="an extra config fragment: configs/fragments/NAME.config (e.g. debug/kasan) or a path")


def cmd_kernel(args: argparse.Namespace) -> int:
    prepared = pipeline.prepare(args.kernel_src, args.notifier, tuple(args.set), tuple(args.fragment))
    print(json.dumps({"bzImage": str(prepared.build.bzimage), "config": str(prepared.build.config),
                      "release": prepared.build.release, "initramfs": str(prepared.image.initramfs),
                      "tree": prepared.tree.identity, "timings": prepared.timings}, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Prepare the kernel, then run the suites under pytest with results in one directory."""
    run_dir = paths.new_run_dir(args.results_dir)
    # Bad input fails here, in a second, not after a 10-minute kernel build.
    check_output_dir(run_dir)
    check_devices(load_profile(args.machine))
    pipeline.prepare(args.kernel_src, args.notifier, fragments=tuple(args.fragment))  # build errors, before pytest
    junit = run_dir / "junit.xml"
    pytest_args = [*(args.suites or [str(paths.REPO / "suites")]), f"--results-dir={run_dir}",
                   f"--junitxml={junit}", f"--machine={args.machine}", f"--notifier={args.notifier}",
                   "-o", "junit_family=xunit2", "-o", "junit_logging=system-out"]
    if args.kernel_src:
        pytest_args.append(f"--kernel-src={args.kernel_src}")
    pytest_args += [f"--fragment={name}" for name in args.fragment]
    if args.k:
        pytest_args += ["-k", args.k]
    if args.boot_timeout:
        pytest_args.append(f"--boot-timeout={args.boot_timeout}")
    if args.guest_modules:
        pytest_args.append(f"--guest-modules={args.guest_modules}")
    # In-process, so that SIGTERM/Ctrl-C reach the code that owns the VMs (harness/console.py stops them).
    import pytest

    rc = int(pytest.main([*pytest_args, "-p", "harness.pytest_plugin", f"--rootdir={paths.REPO}"]))
    print(summary(junit, run_dir))
    return rc


def summary(junit: Path, run_dir: Path) -> str:
    if not junit.exists():
        return f"no results were written; see {run_dir}"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    lines = [f"summary: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
             f"{counts['skipped']} skipped"]
    for case in suite.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            first = (bad.get("message") or "").strip().splitlines()[:1]
            lines.append(f"  {bad.tag.upper()} {case.get('classname')}::{case.get('name')}: {' '.join(first)}")
    lines.append(f"results: {run_dir}")
    return "\n".join(lines)


def cmd_shell(args: argparse.Namespace) -> int:
    """Boot a guest and open an interactive SSH shell in it (host key pinned, never accepted blindly)."""
    profile = load_profile(args.machine)
    check_devices(profile)
    prepared = pipeline.prepare(args.kernel_src, args.notifier, fragments=tuple(args.fragment))
    accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
    workdir = paths.new_run_dir()  # results/<time>: the console log outlives the shell, nothing in /tmp
    modules = ("harness.modules=mmu_probe",) if prepared.build.has("MMU_NOTIFIER") else ()
    vm = VM(profile, prepared.build.bzimage, prepared.image, workdir, accel=accel,
            extra_append=modules)
    try:
        vm.start(boot_timeout=120)
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{vm.ssh_port} {prepared.image.host_key_pub.read_text()}")
        from harness.kernel.image import client_key

        print(f"guest {vm.release} booted in {vm.boot_s:.1f} s; console log: {vm.console_log}", flush=True)
        return subprocess.run(["ssh", "-p", str(vm.ssh_port), "-i", str(client_key()),
                               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                               "-o", "IdentitiesOnly=yes", "root@127.0.0.1"]).returncode
    finally:
        vm.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.vm.bench import run_bench
    out = paths.new_run_dir(args.results_dir)
    figures = run_bench(out, args.kernel_src, args.machine, boots=args.boots)
    print(json.dumps(figures, indent=2))
    print(f"bench.json: {out / 'bench.json'}")
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from harness.vm.bench import run_soak
    out = paths.new_run_dir(args.results_dir)
    figures = run_soak(out, args.kernel_src, args.runs, args.machine)
    print(f"soak: {figures['runs']} runs, {figures['flakes']} flakes; {out / 'soak.json'}")
    return 1 if figures["flakes"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("kernel", help="build (or find cached) the kernel and image; print their paths")
    _kernel_args(p)
    p.add_argument("--set", action="append", default=[], metavar="SYM=VALUE",
                   help="one more config setting on top of the fragments (checked like them)")
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser("run", help="build, boot and run the suites; print a summary")
    _kernel_args(p)
    p.add_argument("--machine", default=os.environ.get("MACHINE", "default"))
    p.add_argument("--results-dir", default=None)
    p.add_argument("-k", default=None, help="pytest -k expression")
    p.add_argument("--boot-timeout", type=float, default=None, help="seconds from QEMU start to the ready marker")
    p.add_argument("--guest-modules", default="", help="extra guest modules to load at boot (fault_panic, ...)")
    p.add_argument("suites", nargs="*", help="suite files or directories (default: suites/)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("shell", help="boot a guest and open a shell in it over SSH")
    _kernel_args(p)
    p.add_argument("--machine", default=os.environ.get("MACHINE", "default"))
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("bench", help="measure build, boot and SSH figures into bench.json")
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None)
    p.add_argument("--machine", default="default")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--boots", type=int, default=3)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("soak", help="boot and run the smoke workloads N times; report flakes and their causes")
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None)
    p.add_argument("--machine", default="default")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--runs", type=int, default=50)
    p.set_defaults(func=cmd_soak)

    # Sub-commands that live with their stage: config, matrix/report, trace, driver, evidence.
    for module in (config_cli, matrix_cli, trace, driver_cli, evidence):
        module.add_parser(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
