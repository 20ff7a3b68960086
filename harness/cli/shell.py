"""`harness shell`: boot a guest and open an interactive SSH shell in it (host key pinned, never accepted blindly)."""

from __future__ import annotations

import argparse
import os
import subprocess

from harness.cli import options
from harness.cli.options import KernelChoice
from harness.kernel.image import client_key
from harness.kernel.prepare import prepare
from harness.results import rundir
from harness.vm.machine import VM, check_devices, load_profile, probe_accel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shell", help="boot a guest and open a shell in it over SSH")
    options.add_kernel(p)
    options.add_machine(p)
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
        vm.start(boot_timeout=120)
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{vm.ssh_port} {prepared.image.host_key_pub.read_text()}")
        print(f"guest {vm.release} booted in {vm.boot_s:.1f} s; console log: {vm.console_log}", flush=True)
        return subprocess.run(["ssh", "-p", str(vm.ssh_port), "-i", str(client_key()),
                               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                               "-o", "IdentitiesOnly=yes", "root@127.0.0.1"]).returncode
    finally:
        vm.stop()
