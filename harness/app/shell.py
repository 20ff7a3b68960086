"""The `shell` use case: boot a guest and open an interactive SSH shell in it (host key pinned, never accepted
blindly), or run one command in it and give back its status and output."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

from harness.app.kernel import KernelChoice
from harness.kernel.image import client_key
from harness.kernel.prepare import prepare
from harness.results import rundir
from harness.vm import faults
from harness.vm.machine import VM, accel_for, check_devices, guest_vm, load_profile, probe_modules
from harness.vm.ssh import SSHError


@dataclass(frozen=True)
class ShellRequest:
    kernel: KernelChoice = field(default_factory=KernelChoice)
    machine: str = "default"
    command: str | None = None  # run this with the guest's sh instead of an interactive shell
    timeout: float = 300  # seconds `command` may run
    gdb: bool = False  # QEMU's gdb stub on a private unix socket; the command that attaches is printed


@dataclass(frozen=True)
class ShellResult:
    exit_status: int  # the command's or the interactive ssh's; 128 + N when signal N killed the command
    stdout: str = ""  # the command's (an interactive shell's went to the terminal)
    stderr: str = ""


def shell(req: ShellRequest) -> ShellResult:
    k = req.kernel
    profile = load_profile(req.machine, k.arch)
    check_devices(profile)
    prepared = prepare(k.kernel_src, k.notifier, fragments=k.fragments, arch=k.arch)
    accel = accel_for(prepared)
    workdir = rundir.new_run_dir()  # results/<time>: the console log outlives the shell, nothing in /tmp
    vm = guest_vm(prepared, profile, workdir, accel, probe_modules(prepared))
    vm.gdb = req.gdb
    try:
        # Faults of the machine leave as one paragraph naming them (harness/vm/faults.py).
        with faults.guarded(vm, "booting the guest") as work:
            vm.start(boot_timeout=120)
            assert vm.ssh
            said = sys.stderr if req.command is not None else sys.stdout
            print(f"guest {vm.release} booted in {vm.boot_s:.1f} s; console log: {vm.console_log}", file=said,
                  flush=True)
            if req.gdb:
                print(f"gdb stub: {vm.gdb_socket}\n  attach: {shlex.join(vm.gdb_command())}"
                      + ("" if prepared.build.has("GDB_SCRIPTS") else "\n  (no lx- commands: this kernel has no "
                         "CONFIG_GDB_SCRIPTS; --fragment debug/dump has them, with DWARF)"), file=said, flush=True)
            if req.command is not None:
                work.doing = f"running: {req.command}"
                result = vm.ssh.run(["sh", "-c", req.command], timeout=req.timeout)
                if result.signal is not None:  # killed in the guest: as a shell reports it
                    return ShellResult(128 + result.signal, result.stdout, result.stderr)
                if result.exit_status < 0:  # neither a status nor a signal came back: the session was cut
                    raise SSHError(f"the SSH session ended without an exit status while running: {req.command}")
                return ShellResult(result.exit_status, result.stdout, result.stderr)
        return ShellResult(_interactive(vm, workdir, prepared.image.host_key_pub.read_text()))
    finally:
        vm.stop()


def _interactive(vm: VM, workdir: os.PathLike, host_key: str) -> int:
    """The system's ssh client on the guest, pinned to its host key; a crash while it ran is the fault."""
    known_hosts = os.path.join(workdir, "known_hosts")
    with open(known_hosts, "w") as f:
        f.write(f"[127.0.0.1]:{vm.ssh_port} {host_key}")
    status = subprocess.run(["ssh", "-p", str(vm.ssh_port), "-i", str(client_key()),
                             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                             "-o", "IdentitiesOnly=yes", "root@127.0.0.1"]).returncode
    assert vm.console
    vm.console.wait_exit(faults.CHANNEL_GRACE_S if status == 255 else 0)  # 255: ssh lost the connection
    powered_off = vm.console.exit_status == 0 and not vm.console.fatal_splat()  # `poweroff` in the shell
    if (crash := faults.dead(vm, "the shell ran")) and not powered_off:
        raise crash
    return status
