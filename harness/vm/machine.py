"""QEMU machines: profiles from configs/machines/*.yaml, the command line as a list, and a VM's life.

A VM boots a kernel build with an image, watches its console from the first byte, and ends in one
of a few classified ways: ready, crashed (a fatal splat), exited (QEMU died), flooded (the console past
its limit: harness/vm/limits.py), or timed out.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic, locks, paths, schema
from harness.errors import InfraError, UserError
from harness.kernel.arch import HOST, known_arches, load_arch
from harness.kernel.image import Image, client_key
from harness.kernel.prepare import Prepared
from harness.results.outcome import HarnessFault, Outcome
from harness.vm import faults, port, qmp, vmcore
from harness.vm import limits as guest_limits
from harness.vm.cmdserver import PortServer, ServerAbsent
from harness.vm.console import Console, WaitResult
from harness.vm.limits import GuestLimits
from harness.vm.ssh import SSH, SSHError
from harness.vm.timeline import Timeline

READY_RE = r"^HARNESS-READY (\S+)\r*\n"  # the whole line: a half-printed release is no release
PANIC_END = r"---\[ end Kernel panic"  # panic()'s last line: with panic=0 the guest then spins (kernel/panic.c)
PANIC_PRINT_S = 10.0  # what a panic may take to print its trace before it is dumped regardless


class QemuMissing(InfraError):
    """The machine has no QEMU: an installation to fix, not an input."""


class MachineError(UserError):
    """Bad input about a machine: an unknown profile, a malformed one, QEMU missing."""


class BootError(HarnessFault):
    """A boot that did not reach the ready marker: CRASH, TIMEOUT or INFRA, with the console log kept."""

    def __init__(self, outcome: str, reason: str, console_log: Path):
        super().__init__(f"{outcome}: {reason}", console_log)
        self.outcome = Outcome(outcome)
        self.reason = reason


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str = "x86_64"
    machine: str = "pc"
    cpu: str = "max"
    cpus: int = 2
    memory_mib: int = 1024
    devices: tuple[str, ...] = ()
    append: tuple[str, ...] = ()
    snapshots: bool = True  # a fresh guest is a restore of the first boot's snapshot (false: a boot)
    numa_nodes: int = 0  # QEMU's own NUMA nodes (memory and CPUs shared out evenly); 0: none


_WORD = schema.Str(r"[^\s]+", "a word without spaces")
PROFILE = schema.Record({
    "description": schema.optional(schema.Str(), "", "what the guest is for"),
    "arch": schema.optional(schema.Str(r"\w+", "an architecture name"), HOST,
                            f"guest architecture (configs/arches/): {', '.join(known_arches())}; a profile of "
                            f"another than {HOST} lives in machines/ARCH/"),
    "machine": schema.optional(_WORD, "pc", "QEMU's -machine"),
    "cpu": schema.optional(_WORD, "max", "QEMU's -cpu (host: the host's, under KVM only)"),
    "cpus": schema.optional(schema.Int(min=1), 2, "QEMU's -smp"),
    "memory_mib": schema.optional(schema.Int(min=64), 1024, "QEMU's -m, in MiB"),
    "devices": schema.optional(schema.ListOf(_WORD), [],
                               "QEMU -device arguments (MODEL[,PROP=VALUE...]), one each"),
    "append": schema.optional(schema.ListOf(schema.Str(r"[^\s]+", "a kernel parameter without spaces")), [],
                         "kernel command line parameters, one per item"),
    "snapshots": schema.optional(schema.Bool(), True,
                                 "a fresh guest is a restore of the first boot's snapshot (false: a boot of its own)"),
    "numa_nodes": schema.optional(schema.Int(min=0), 0, "NUMA nodes QEMU gives the guest (-numa), memory and "
                                  "CPUs shared out evenly; 0: none (x86 guests emulate theirs: numa=fake=2)"),
}, "a machine profile")


def load_profile(name: str, arch: str = HOST) -> Profile:
    """configs/machines/NAME.yaml, or for another architecture its own machines/ARCH/NAME.yaml (the same name, the
    same purpose: numa2 is two nodes on either), or NAME as a path, which must be of that architecture."""
    folder = paths.CONFIGS / "machines" / ("" if arch == HOST else arch)
    kind = "machine profile" if arch == HOST else f"{arch} machine profile"
    data = schema.load_named(folder, name, kind, PROFILE, MachineError).data
    if data["arch"] not in known_arches():
        raise MachineError(f"machine profile {name!r} asks for arch {data['arch']!r}; the harness builds and boots "
                           f"{', '.join(known_arches())} guests (configs/arches/)")
    if data["arch"] != arch:
        raise MachineError(f"machine profile {name!r} is an {data['arch']} machine, not an {arch} one")
    if data["numa_nodes"] and (data["numa_nodes"] > data["cpus"] or data["memory_mib"] % data["numa_nodes"]):
        raise MachineError(f"machine profile {name!r}: {data['numa_nodes']} NUMA nodes need at least as many CPUs "
                           f"(it has {data['cpus']}) and memory_mib divisible by them (it has {data['memory_mib']})")
    return Profile(name=name, description=data["description"], arch=data["arch"], machine=data["machine"],
                   cpu=data["cpu"], cpus=data["cpus"], memory_mib=data["memory_mib"],
                   devices=tuple(data["devices"]), append=tuple(data["append"]), snapshots=data["snapshots"],
                   numa_nodes=data["numa_nodes"])


def qemu_binary(arch: str = HOST) -> str:
    a = load_arch(arch)
    qemu = shutil.which(a.qemu)
    if not qemu:
        raise QemuMissing(f"{a.qemu} not found: apt-get install {a.qemu_package}")
    return qemu


@functools.cache
def qemu_devices(qemu: str) -> tuple[str, frozenset[str]]:
    """This QEMU's version line and the device models it knows (`-device help`)."""
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    listing = subprocess.run([qemu, "-nodefaults", "-device", "help"], capture_output=True, text=True).stdout
    return version, frozenset(re.findall(r'^name "([^"]+)"', listing, re.MULTILINE))


def check_devices(profile: Profile) -> None:
    """A device this QEMU does not have is the user's to fix (a newer QEMU), not a boot failure."""
    version, known = qemu_devices(qemu_binary(profile.arch))
    for device in profile.devices:
        model = device.split(",", 1)[0]
        if model not in known:
            raise MachineError(f"machine profile {profile.name!r} needs the QEMU device {model!r}, which {version} "
                               f"does not have: install a QEMU that does, or drop the device from the profile")


def qemu_argv(profile: Profile, kernel: Path, initrd: Path, ssh_port: int, accel: str,
              extra_append: tuple[str, ...] = (), qmp_fd: int | None = None, vmcoreinfo: bool = False,
              gdb_socket: Path | None = None, port_fd: int | None = None, incoming_fd: int | None = None
              ) -> list[str]:
    """The whole QEMU command line. QEMU listens on nothing another user could reach: the guest's SSH
    is forwarded on 127.0.0.1 only (and its host key is pinned), the serial console is QEMU's stdio
    (a pty only the harness holds), the human monitor is off, and QMP, where asked for, is an
    inherited socketpair end with no name (harness/vm/qmp.py). The guest reaches nothing either: its
    user network is restricted (restrict=on), so that it can neither connect to the host's services
    (its loopback is 10.0.2.2 to the guest) nor to the network, while the forward to its SSH still works."""
    argv = [
        qemu_binary(profile.arch),
        "-machine", profile.machine,
        # One host thread per vCPU (MTTCG), so that two guest CPUs really run at once and a race between
        # them can happen. QEMU 7.2 already defaults to it for x86 on x86 ("CPU 0/TCG", "CPU 1/TCG"
        # threads with -name debug-threads=on); said here so that no QEMU's default can take it away.
        "-accel", "tcg,thread=multi" if accel == "tcg" else accel,
        "-cpu", "host" if accel == "kvm" and profile.cpu == "host" else profile.cpu,
        "-smp", str(profile.cpus),
        "-m", str(profile.memory_mib),
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", " ".join((*profile.append, *extra_append)),
        "-display", "none",
        "-vga", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",  # a guest that reboots (panic=-1, triple fault) ends QEMU instead of looping
        "-nodefaults",
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]
    for dev in profile.devices:
        argv += ["-device", dev]
    argv += numa_args(profile)
    if vmcoreinfo:  # the guest hands its VMCOREINFO to QEMU, which writes it into a dump (harness/vm/vmcore.py)
        argv += ["-device", "vmcoreinfo"]
    if gdb_socket:  # gdb's remote stub on a unix socket in a directory only the harness's user can enter
        argv += ["-chardev", f"socket,id=gdb,path={gdb_socket},server=on,wait=off", "-gdb", "chardev:gdb"]
    if port_fd is not None:  # the command server's virtio-serial port (harness/vm/port.py)
        argv += port.command_port_args(port_fd)
    if incoming_fd is not None:  # a snapshot's state to start from, not a boot (harness/vm/snapshot.py)
        argv += ["-incoming", f"fd:{incoming_fd}"]
    return argv + (qmp.qemu_args(qmp_fd) if qmp_fd is not None else [])


def numa_args(profile: Profile) -> list[str]:
    """-numa nodes of equal memory, CPU i on node i mod N, which QEMU describes to the guest (to an arm64 one in the
    device tree's numa-node-id, read by OF_NUMA): real nodes, where numa=fake splits one node's memory only."""
    nodes = profile.numa_nodes
    args: list[str] = []
    for n in range(nodes):
        cpus = [c for c in range(profile.cpus) if c % nodes == n]
        args += ["-object", f"memory-backend-ram,id=numa-mem{n},size={profile.memory_mib // nodes}M",
                 "-numa", f"node,nodeid={n},memdev=numa-mem{n}," + ",".join(f"cpus={c}" for c in cpus)]
    return args


def _seconds(uptime: str) -> float | None:
    """The first field of /proc/uptime ("12.34 20.01"), or None when it is not a number."""
    try:
        return float(uptime.split()[0])
    except (IndexError, ValueError):
        return None


def free_port() -> int:
    """A port free on 127.0.0.1 right now; QEMU may still lose a race for it, so boots retry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_accel(kernel: Path, image: Image, timeout: float = 30) -> str:
    """KVM only when a real boot under it reaches the ready marker; TCG otherwise. Cached per host."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    qemu_version, _ = qemu_devices(qemu_binary())
    cache = paths.cache_root() / "kvm-probe.json"
    key = f"{os.uname().release} {qemu_version}"
    if cache.exists() and (known := json.loads(cache.read_text())).get("key") == key:
        return known["accel"]
    # One probe at a time: parallel runs (xdist workers, matrix cells) share its folder and cache file.
    with locks.locked(paths.cache_root() / "locks" / "kvm-probe.lock", "probing KVM with a boot"):
        if cache.exists() and (known := json.loads(cache.read_text())).get("key") == key:
            return known["accel"]  # probed while this process waited
        return _probe_kvm(kernel, image, timeout, cache, key)


def _probe_kvm(kernel: Path, image: Image, timeout: float, cache: Path, key: str) -> str:
    workdir = paths.cache_root() / "kvm-probe"
    workdir.mkdir(parents=True, exist_ok=True)
    vm = VM(load_profile("default"), kernel, image, workdir, accel="kvm")
    try:
        vm.start(boot_timeout=timeout, connect_ssh=False)
        accel = "kvm"
    except BootError as e:
        accel = "tcg"
        print(f"KVM probe boot failed ({e.reason}); using TCG. Probe console: {e.console_log}", flush=True)
    finally:
        vm.stop()
    atomic.write_text(cache, json.dumps({"key": key, "accel": accel}))
    return accel


@dataclass
class VM:
    profile: Profile
    kernel: Path
    image: Image
    workdir: Path  # console.log and friends go here
    accel: str = "tcg"
    extra_append: tuple[str, ...] = ()
    console: Console | None = None
    ssh: SSH | None = None
    ssh_port: int = 0
    release: str = ""
    boot_s: float = 0.0  # QEMU start to an authenticated SSH session (to the ready marker without SSH)
    timeline: Timeline = field(default_factory=Timeline)  # the last boot's stages (harness/vm/timeline.py)
    argv: list[str] = field(default_factory=list)
    qmp_channel: qmp.Channel | None = None  # this boot's QMP socketpair
    command_port: port.Pair | None = None  # this boot's virtio-serial command port (harness/vm/port.py)
    restored_from: str = ""  # the snapshot this guest was restored from (harness/vm/snapshot.py), not booted
    vmcore: bool = False  # a crash or a hang leaves a vmcore (a dumpable kernel: harness/vm/vmcore.py)
    gdb: bool = False  # QEMU's gdb stub on gdb_socket (`harness shell --gdb`)
    dumped: dict[str, str] = field(default_factory=dict)  # {"vmcore": path, or why not}, once dumped
    _dumping: threading.Thread | None = None
    limits: GuestLimits = field(default_factory=guest_limits.load)  # what the host takes from this guest

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def start(self, boot_timeout: float, connect_ssh: bool = True, ssh_timeout: float = 60,
              silence_timeout: float | None = 60) -> None:
        """Boot to the ready marker (and an SSH session); BootError otherwise, with QEMU stopped."""
        check_devices(self.profile)
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for attempt in range(3):
            console = self.launch()
            result = console.wait_for(READY_RE, boot_timeout, silence_timeout=silence_timeout)
            if result.status == "exited" and "Could not set up host forwarding" in console.text and attempt < 2:
                continue  # lost the race for the port to another process: take another
            break
        self._check_boot(result, boot_timeout)
        assert result.match and self.console
        self.release = result.match[1]
        self.timeline = self.console.timeline()
        if connect_ssh:
            try:
                self.ssh = SSH.connect(self.ssh_port, self.image.host_key_pub, client_key(), timeout=ssh_timeout,
                                       log=self.workdir / "commands.log", limits=self.limits,
                                       port_server=self._greet_port(ssh_timeout))
                self.ssh.peer_alive = self.alive  # a dead QEMU or a crashed kernel: say so now, not in 15 s
                self.timeline.mark("ssh", time.monotonic() - self.console.started, self.console.qemu_cpu_s())
                self.boot_s = time.monotonic() - started
                # The first command closes the timeline: the session does run commands, and the guest's clock
                # then is kept beside the host's.
                uptime = self.ssh.run(["cat", "/proc/uptime"], timeout=ssh_timeout, check=True).stdout
                self.timeline.mark("command", time.monotonic() - self.console.started, self.console.qemu_cpu_s(),
                                   guest_uptime=_seconds(uptime))
            except SSHError as e:
                raise self.unanswered(e, "booting", f"guest booted but SSH is unreachable: {e}") from None
        else:
            self.boot_s = time.monotonic() - started

    def unanswered(self, e: SSHError, doing: str, otherwise: str) -> BootError:
        """The BootError for a guest whose channel failed while `doing` ("booting"): QEMU stopped, and the cause
        named from its console, where a kernel's or QEMU's end shows a moment after the channel's."""
        assert self.console
        ended = self.console.wait_for(r"(?!)", faults.CHANNEL_GRACE_S)
        during = "during boot" if doing == "booting" else f"while {doing}"
        self.stop()
        stopped_at = self.timeline.describe_last() if not self.restored_from else f"restored from {self.restored_from}"
        if ended.status == "crashed" and ended.splat:
            return BootError("CRASH", f"kernel crashed {during}: {ended.splat.title} ({stopped_at})",
                             self.console_log)
        if ended.status == "exited":
            return BootError("CRASH", f"{faults.qemu_end(ended.exit_status)} while {doing} ({stopped_at})",
                             self.console_log)
        if ended.status == "flooded":
            return BootError("FLOOD", f"{self.console.flooded} while {doing} ({stopped_at})", self.console_log)
        return BootError("INFRA", f"{otherwise} ({stopped_at})", self.console_log)

    def launch(self, incoming_fd: int | None = None) -> Console:
        """Start QEMU with this VM's command line (from `incoming_fd`'s snapshot state, if given), on a free port
        and with new QMP and command-port socketpairs; its console is read from the first byte."""
        self.ssh_port = free_port()
        for pair in (self.qmp_channel, self.command_port):
            if pair:
                pair.close()
        self.qmp_channel, self.command_port = qmp.Channel(), port.Pair()
        self.argv = qemu_argv(self.profile, self.kernel, self.image.initramfs, self.ssh_port, self.accel,
                              self.extra_append, self.qmp_channel.qemu_fd, vmcoreinfo=self.vmcore,
                              gdb_socket=self.gdb_socket if self.gdb else None, port_fd=self.command_port.qemu_fd,
                              incoming_fd=incoming_fd)
        (self.workdir / "qemu-argv.json").write_text(json.dumps(self.argv, indent=1))
        inherited = (self.qmp_channel.qemu_fd, self.command_port.qemu_fd)
        self.console = Console(self.argv, self.console_log, limits=self.limits,
                               pass_fds=inherited if incoming_fd is None else (*inherited, incoming_fd))
        if self.vmcore:
            self.console.on_fatal = self._crashed
        self.qmp_channel.handed_over()
        self.command_port.handed_over()
        return self.console

    def _greet_port(self, timeout: float) -> PortServer | None:
        """The guest's server on the command port, which /init started before its ready marker; None (commands
        then go over SSH alone) for a guest without one, said in commands.log."""
        assert self.command_port
        try:
            return PortServer.greet(self.command_port.ours, time.monotonic() + timeout, self.limits)
        except (ServerAbsent, TimeoutError) as e:
            self.note(f"no command server on the virtio-serial port ({e}); commands go over SSH")
            return None

    def note(self, text: str) -> None:
        """A line in commands.log, beside the commands: what the harness did to this guest, and why."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "commands.log", "a") as log:
            log.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")

    def _check_boot(self, result: WaitResult, timeout: float) -> None:
        if result.status == "matched":
            return
        assert self.console
        if result.status in ("timeout", "silent"):
            qmp.save(self.post_mortem(self.workdir), self.workdir)
        self.stop()
        stopped_at = self.console.timeline().describe_last()  # where the boot got to, from the host's view
        if result.status == "crashed" and result.splat:
            raise BootError("CRASH", f"kernel crashed during boot: {result.splat.title} ({stopped_at})",
                            self.console_log)
        if result.status == "flooded":
            raise BootError("FLOOD", f"{self.console.flooded} while booting ({stopped_at})", self.console_log)
        if result.status == "exited":
            splat = self.console.fatal_splat()
            if splat:
                raise BootError("CRASH", f"kernel crashed during boot: {splat.title} ({stopped_at})", self.console_log)
            if result.exit_status is not None and result.exit_status < 0:  # killed: not a bad command line
                raise BootError("CRASH", f"{faults.qemu_end(result.exit_status)} while booting ({stopped_at})",
                                self.console_log)
            tail = self.console.text.strip().splitlines()[-3:]
            raise BootError("INFRA", f"QEMU exited with status {result.exit_status} before the guest was ready "
                            f"({stopped_at}): " + " | ".join(tail), self.console_log)
        if result.status == "silent":
            raise BootError("TIMEOUT", f"console silent for {result.silent_s:g} s during boot ({stopped_at})",
                            self.console_log)
        raise BootError("TIMEOUT", f"guest not ready within {timeout:g} s ({stopped_at})", self.console_log)

    def post_mortem(self, into: Path) -> dict[str, str]:
        """Before a guest that timed out is stopped: its registers and screen (harness/vm/qmp.py), then, from a
        dumpable kernel, its memory (harness/vm/vmcore.py, into the VM's directory).

        The kernel is <build>/arch/x86/boot/bzImage; its System.map names where each CPU was."""
        if not (self.console and self.console.child.isalive() and self.qmp_channel):
            return {}
        found = qmp.post_mortem(self.qmp_channel, into, system_map=self._build / "System.map")
        if self.vmcore and not self.dumped:
            self.dumped = vmcore.capture(self.qmp_channel, self.workdir, self._build, self._modules(), "hang")
        return found | self.dumped

    @property
    def _build(self) -> Path:
        return self.kernel.parents[3]

    @property
    def gdb_socket(self) -> Path:
        """QEMU's gdb stub (with `gdb`): in a 0700 directory of the VM's, so no other local user reaches it."""
        private = self.workdir / "gdb"
        private.mkdir(mode=0o700, exist_ok=True)
        private.chmod(0o700)
        return private / "socket"

    def gdb_command(self) -> list[str]:
        """The gdb that attaches to this guest's stub, with the build's vmlinux and its lx- scripts."""
        build = self._build
        return ["gdb", "-q", "-iex", f"add-auto-load-safe-path {build}", str(build / "vmlinux"),
                "-ex", f"target remote {self.gdb_socket}"]

    def _modules(self) -> list[Path]:
        """The .ko files the guest may have loaded: the kernel's own (modules.order) and the harness's guest modules."""
        order = self._build / "modules.order"
        own = [self._build / Path(n).with_suffix(".ko") for n in (order.read_text().split() if order.exists() else ())]
        return [ko for ko in own if ko.exists()] + sorted(self._build.glob("harness-guest-modules/*/*.ko"))

    def _crashed(self) -> None:
        """The console saw the kernel's first fatal splat: dump the guest (panic=0 keeps it there) once the panic
        has printed, on a thread of its own, while the console goes on reading; stop() waits for it."""
        def dump() -> None:
            assert self.console and self.qmp_channel
            self.console.wait_for(PANIC_END, PANIC_PRINT_S, stop_on_crash=False)
            if self.console.child.isalive():
                self.dumped = vmcore.capture(self.qmp_channel, self.workdir, self._build, self._modules(), "crash")
        self._dumping = threading.Thread(target=dump, name=f"vmcore:{self.workdir.name}", daemon=True)
        self._dumping.start()

    def alive(self) -> bool:
        return bool(self.console and self.console.child.isalive() and not self.console.fatal_splat())

    def stop(self) -> None:
        """Power off: close SSH, stop QEMU. Idempotent; never leaves QEMU behind. A crash's dump ends first."""
        if self._dumping:
            self._dumping.join(vmcore.DUMP_TIMEOUT_S + PANIC_PRINT_S)
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.console:
            self.console.kill()
        for pair in (self.qmp_channel, self.command_port):
            if pair:
                pair.close()


def accel_for(prepared: Prepared) -> str:
    """HARNESS_ACCEL if it is set, else what probe_accel() found (KVM only when a real boot under it works); TCG for
    another architecture than the host's, which KVM cannot run."""
    if prepared.build.arch.foreign:
        return "tcg"
    return os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.kernel_image, prepared.image)


def probe_modules(prepared: Prepared) -> tuple[str, ...]:
    """The probe module, where this kernel can have it (CONFIG_MMU_NOTIFIER)."""
    return ("mmu_probe",) if prepared.build.has("MMU_NOTIFIER") else ()


def guest_vm(prepared: Prepared, profile: Profile, workdir: Path, accel: str, modules: tuple[str, ...] = ()) -> VM:
    """The one recipe for a guest of a prepared kernel (every command and the test sessions use it): its
    bzImage and image under the profile's QEMU, and on the kernel's command line, after the profile's
    `append`, the guest modules /init loads (`harness.modules=`, images/init)."""
    if profile.arch != prepared.build.arch.name:
        raise MachineError(f"machine profile {profile.name!r} is an {profile.arch} machine; the kernel "
                           f"{prepared.build.dir.name} is an {prepared.build.arch.name} one")
    append: tuple[str, ...] = (f"harness.modules={','.join(modules)}",) if modules else ()
    dumpable = vmcore.dumpable(prepared.build.config_values())
    # A dumpable kernel stays in its panic (panic=0 after the profile's panic=-1: the last one counts) until it is
    # dumped (VM._crashed), where another reboots and QEMU ends at once
    append += ("panic=0",) if dumpable else ()
    return VM(profile, prepared.build.kernel_image, prepared.image, workdir, accel=accel, extra_append=append,
              vmcore=dumpable)
