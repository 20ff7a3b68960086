"""`harness shell`: boot a guest and open an interactive SSH shell in it (host key pinned, never accepted blindly),
or, with -c CMD, run one command and exit with its status."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from harness.cli import options
from harness.cli.options import KernelChoice
from harness.kernel.image import client_key
from harness.kernel.prepare import prepare
from harness.results import rundir
from harness.vm import faults
from harness.vm.machine import VM, check_devices, load_profile, probe_accel
from harness.vm.ssh import SSHError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shell", help="boot a guest and open a shell in it over SSH (or run one command: -c)")
    options.add_kernel(p)
    options.add_machine(p)
    p.add_argument("-c", dest="command", metavar="CMD",
                   help="run CMD with the guest's sh, print its output, exit with its status (no terminal)")
    p.add_argument("--timeout", type=float, default=300, help="seconds CMD may run (with -c; default 300)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    kernel = KernelChoice.from_args(args)
    profile = load_profile(args.machine)
    check_devices(profile)
    prepared = prepare(kernel.kernel_src, kernel.notifier, fragments=kernel.fragments)
    accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
    workdir = rundir.new_run_dir()  # results/<time>: the console log outlives the shell, nothing in /tmp
    modules = ("harness.modules=mmu_probe",) if prepared.build.has("MMU_NOTIFIER") else ()
    vm = VM(profile, prepared.build.bzimage, prepared.image, workdir, accel=accel, extra_append=modules)
    try:
        # Faults of the machine leave as one paragraph naming them (harness/vm/faults.py, exit status 2).
        with faults.guarded(vm, "booting the guest") as work:
            vm.start(boot_timeout=120)
            assert vm.ssh
            print(f"guest {vm.release} booted in {vm.boot_s:.1f} s; console log: {vm.console_log}",
                  file=sys.stderr if args.command is not None else sys.stdout, flush=True)
            if args.command is not None:
                work.doing = f"running: {args.command}"
                result = vm.ssh.run(["sh", "-c", args.command], timeout=args.timeout)
                if result.exit_status < 0:  # no status came back: the session was cut, not the command's
                    raise SSHError(f"the SSH session ended without an exit status while running: {args.command}")
                sys.stdout.write(result.stdout)
                sys.stderr.write(result.stderr)
                return result.exit_status
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{vm.ssh_port} {prepared.image.host_key_pub.read_text()}")
        status = subprocess.run(["ssh", "-p", str(vm.ssh_port), "-i", str(client_key()),
                                 "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                                 "-o", "IdentitiesOnly=yes", "root@127.0.0.1"]).returncode
        assert vm.console
        vm.console.wait_exit(faults.CHANNEL_GRACE_S if status == 255 else 0)  # 255: ssh lost the connection
        powered_off = vm.console.exit_status == 0 and not vm.console.fatal_splat()  # `poweroff` in the shell
        if (crash := faults.dead(vm, "the shell ran")) and not powered_off:
            raise crash
        return status
    finally:
        vm.stop()
