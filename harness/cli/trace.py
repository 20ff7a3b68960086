"""`harness trace`: run any static program in a guest and print the mmu_notifier events of its mm.

    harness trace [--kernel-src KSRC] [--machine PROFILE] [--json] [--timeout S] -- PROGRAM [ARGS...]

The program is copied into a freshly booted guest and started by guest/programs/trace-launch.c,
which subscribes the probe's classic notifier to the program's mm at its exec, before its first
instruction (the child stops at execve under PTRACE_TRACEME; the launcher subscribes and detaches).
Only that process is watched: a notifier is not inherited across fork.

Events are the notifier's invalidate_range_start calls, in order, and its release at exit, shown as
the kernel shows release to interval notifiers: RELEASE over [0, ULONG_MAX).
With --json, one document: {"exit_status": N, "stdout": "...", "events": [{"seq": N, "event": "UNMAP",
"start": N, "end": N, "flags": N}, ...]}. The program's stderr goes to stderr either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.cli import options
from harness.kernel.build import BuildError
from harness.kernel.prepare import prepare
from harness.observe.probe import Probe
from harness.observe.trace import events_of, render
from harness.results import rundir
from harness.vm.machine import VM, BootError, MachineError, load_profile, probe_accel
from harness.vm.ssh import SSHError

GUEST_DIR = "/tmp/harness-trace"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="run a static program in a guest and print its mm's notifier events",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=120, help="seconds the program may run (default 120)")
    p.add_argument("program", type=Path, metavar="PROGRAM", help="a statically linked executable on this host")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    program: Path = args.program
    argv = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not program.is_file() or not os.access(program, os.X_OK):
        print(f"harness trace: {program} is not an executable file", file=sys.stderr)
        return 2
    prepared = prepare(args.kernel_src, "on")
    if not prepared.build.has("MMU_NOTIFIER"):
        print(f"harness trace: the kernel {prepared.build.config} has no CONFIG_MMU_NOTIFIER", file=sys.stderr)
        return 2
    accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
    workdir = rundir.new_run_dir()  # results/<time>: the console log is kept, nothing left in /tmp
    vm = VM(load_profile(args.machine), prepared.build.bzimage, prepared.image, workdir, accel=accel,
            extra_append=("harness.modules=mmu_probe",))
    try:
        vm.start(boot_timeout=120)
        assert vm.ssh
        ssh = vm.ssh
        target = f"{GUEST_DIR}/{program.name}"
        ssh.run(["mkdir", "-p", GUEST_DIR], check=True)
        ssh.put(program, target)
        result = ssh.run(["/guest/bin/trace-launch", f"{GUEST_DIR}/status.json", target, *argv],
                         timeout=args.timeout)
        if not result.ok:
            raise SSHError(f"the launcher failed:\n{result.describe()}")
        status = json.loads(ssh.run(["cat", f"{GUEST_DIR}/status.json"], check=True).stdout)
        events = events_of(Probe(ssh).events(pid=status["pid"]))
    except (BootError, SSHError, MachineError, BuildError) as e:
        print(f"harness trace: {e}\n  console log: {vm.console_log}", file=sys.stderr)
        return 2
    finally:
        vm.stop()
    if result.stderr:
        sys.stderr.write(result.stderr)
    if args.json:
        print(json.dumps({"exit_status": status["exit_status"], "stdout": result.stdout, "events": events}))
    else:
        print(f"# {program} {' '.join(argv)}: pid {status['pid']} in a {prepared.build.release} guest, "
              f"probe subscribed at exec; console log: {vm.console_log}")
        print(render(events, result.stdout, status["exit_status"]))
    return 0
