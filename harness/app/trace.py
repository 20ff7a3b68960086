"""The `trace` use case: run a program in a fresh guest and record the mmu_notifier events of its mm.

The program is copied into the guest and started by guest/programs/trace-launch.c, which subscribes the
probe's classic notifier to the program's mm at its exec, before its first instruction. A statically linked
program is copied alone; a dynamically linked one with its loader and shared libraries, at the paths the
host's loader resolves them to (`ld.so --list`, as ldd does); one it cannot resolve is refused before booting.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.kernel.arch import HOST, load_arch
from harness.kernel.prepare import prepare
from harness.observe.probe import Probe
from harness.observe.trace import events_of
from harness.results import rundir
from harness.results.outcome import HarnessFault
from harness.vm import faults
from harness.vm.machine import accel_for, guest_vm, load_profile

GUEST_DIR = "/tmp/harness-trace"


@dataclass(frozen=True)
class TraceRequest:
    program: Path
    argv: tuple[str, ...] = ()
    kernel_src: str | None = None
    machine: str = "default"
    timeout: float = 120
    arch: str = HOST


@dataclass(frozen=True)
class TraceResult:
    exit_status: int  # the program's (128 + signal when it was killed), as strace reports it
    pid: int
    stdout: str
    stderr: str
    events: list[dict] = field(default_factory=list)  # {"seq", "event", "start", "end", "flags"}
    release: str = ""
    console_log: Path | None = None


def trace(req: TraceRequest) -> TraceResult:
    program = req.program
    if not program.is_file() or not os.access(program, os.X_OK):
        raise UserError(f"trace: {program} is not an executable file")
    if (machine := elf_machine(program)) is not None and machine != (arch := load_arch(req.arch)).elf_machine:
        raise UserError(f"trace: {program} is not an {arch.name} program (its ELF machine is {machine}, an "
                        f"{arch.name} one's {arch.elf_machine}): build it with {arch.gcc} -static")
    libraries = shared_libraries(program, interpreter) if (interpreter := elf_interpreter(program)) else []
    prepared = prepare(req.kernel_src, "on", arch=req.arch)
    if not prepared.build.has("MMU_NOTIFIER"):
        raise UserError(f"trace: the kernel {prepared.build.config} has no CONFIG_MMU_NOTIFIER")
    accel = accel_for(prepared)
    workdir = rundir.new_run_dir()  # results/<time>: the console log is kept, nothing left in /tmp
    vm = guest_vm(prepared, load_profile(req.machine, prepared.build.arch.name), workdir, accel, ("mmu_probe",))
    try:
        # A dead QEMU, a kernel crash, a hang or a lost channel leaves as one fault, said the way every
        # command says it (harness/vm/faults.py; printed by cli/main.py).
        with faults.guarded(vm, "booting the guest") as work:
            vm.start(boot_timeout=120)
            assert vm.ssh
            ssh = vm.ssh
            target = f"{GUEST_DIR}/{program.name}"
            work.doing = f"copying {program} into the guest"
            ssh.run(["mkdir", "-p", GUEST_DIR, *sorted({str(Path(p).parent) for p, _ in libraries})], check=True)
            for guest_path, host_file in libraries:
                ssh.put(host_file, guest_path)
            ssh.put(program, target)
            work.doing = f"{program.name} ran"
            result = ssh.run(["/guest/bin/trace-launch", f"{GUEST_DIR}/status.json", target, *req.argv],
                             timeout=req.timeout)
            if not result.ok:  # not the program's status (that is in status.json): the guest's, or the launcher's
                if vm.console:
                    vm.console.wait_exit(faults.CHANNEL_GRACE_S)  # a session cut by QEMU's death has no status
                if crash := faults.dead(vm, work.doing):
                    raise crash
                raise HarnessFault(f"trace-launch could not run {program.name} in the guest (exit status "
                                   f"{result.exit_status}): {result.stderr.strip()[-500:]}", vm.console_log)
            work.doing = f"reading the events of {program.name}"
            status = json.loads(ssh.run(["cat", f"{GUEST_DIR}/status.json"], check=True).stdout)
            events = events_of(Probe(ssh).events(pid=status["pid"]))
    finally:
        vm.stop()
    return TraceResult(int(status["exit_status"]), int(status["pid"]), result.stdout, result.stderr, events,
                       prepared.build.release, vm.console_log)


# The host's own loaders, trusted to list a program's libraries without running it (`ld.so --list`, what
# ldd does). A program naming another interpreter is not run on the host to find out.
KNOWN_LOADERS = ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def shared_libraries(program: Path, interpreter: str) -> list[tuple[str, Path]]:
    """(path in the guest, file on the host) of the loader and every library `program` needs."""
    if interpreter not in KNOWN_LOADERS or not Path(interpreter).exists():
        raise UserError(f"harness trace: {program} is dynamically linked with the interpreter {interpreter}, "
                        f"which this host does not have as its loader: build it with -static")
    listed = subprocess.run([interpreter, "--list", str(program)], capture_output=True, text=True)
    missing = [line.split()[0] for line in listed.stdout.splitlines() if "=> not found" in line]
    if listed.returncode != 0 or missing:
        raise UserError(f"harness trace: the shared libraries of {program} cannot be resolved on this host "
                        f"({', '.join(missing) or listed.stderr.strip() or f'exit {listed.returncode}'}): "
                        "build it with -static")
    found = [(interpreter, Path(interpreter).resolve())]
    for line in listed.stdout.splitlines():
        if m := re.search(r"=> (/\S+) \(", line):
            found.append((m[1], Path(m[1]).resolve()))  # at the path the loader asks for, the file it names
    return found


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file; None for anything else (a script: the guest's shell says what it thinks)."""
    with open(path, "rb") as f:
        head = f.read(20)
    return int.from_bytes(head[18:20], "little" if head[5:6] == b"\x01" else "big") \
        if len(head) == 20 and head[:4] == b"\x7fELF" else None


def elf_interpreter(path: Path) -> str:
    """The program interpreter (PT_INTERP) a dynamically linked ELF asks for; "" for a static one."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # not a 64-bit ELF: let the guest say what it thinks
            return ""
        order = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _, p_offset, _, _, p_filesz = struct.unpack(order + "IIQQQQ", f.read(40))
            if p_type == 3:  # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode(errors="replace")
    return ""
