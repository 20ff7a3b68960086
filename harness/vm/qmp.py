"""QEMU's machine protocol (QMP), just enough for a post-mortem (CPU registers, the screen, the memory) and a
snapshot (harness/vm/snapshot.py: `migrate` to a file handed over with `getfd`).

The channel is a socketpair: QEMU inherits one end as a file descriptor (`-chardev socket,fd=N`), the
harness keeps the other. It has no name, so no other process can reach it: QMP controls a process
that runs as the harness's user (root, often), and `human-monitor-command` reaches `migrate exec:`,
a shell. An abstract unix socket, as before, was reachable by any local user (issue 18).
Used when a guest timed out, before QEMU is stopped: what the CPUs were doing tells a guest spinning
in the kernel from one waiting on something. Best effort and bounded: a wedged QEMU costs seconds.
"""

from __future__ import annotations

import array
import bisect
import collections
import json
import re
import socket
import threading
import time
from pathlib import Path

from harness.vm.port import Pair


class Channel(Pair):
    """One VM's QMP socketpair (harness/vm/port.py). QEMU greets once, at start, so one session
    (`session()`) serves every post-mortem of that VM."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # the test watchdog's thread and the main thread may both look
        self._qmp: QMP | None = None

    def qemu_args(self) -> list[str]:
        return qemu_args(self.qemu_fd)

    def session(self, timeout: float = 5) -> QMP:
        with self._lock:
            if self._qmp is None:
                self._qmp = QMP(self.ours, timeout)
            return self._qmp


def qemu_args(fd: int) -> list[str]:
    """A client chardev on an already connected socket: QEMU opens no listener of its own."""
    return ["-chardev", f"socket,id=qmp,fd={fd}", "-mon", "chardev=qmp,mode=control"]


KERNEL_SPACE = 0xFFFF800000000000  # x86-64: addresses from here up are the kernel's


class QMPError(Exception):
    pass


class QMP:
    """A QMP session over a connected socket: the greeting read, capabilities negotiated."""

    def __init__(self, sock: socket.socket, timeout: float = 5):
        self.sock = sock
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.lock = threading.Lock()
        try:
            self.file = self.sock.makefile("rwb")
            self._read()  # the greeting
            self.execute("qmp_capabilities")
        except (OSError, ValueError) as e:
            raise QMPError(f"QMP unreachable: {e}") from None

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise QMPError("QMP closed the connection")
            msg = json.loads(line)
            if "event" not in msg:  # asynchronous events (STOP, RESUME, ...) are not answers
                return msg

    def execute(self, command: str, **arguments: object) -> object:
        return self._send(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n", command)

    def getfd(self, name: str, fd: int) -> None:
        """Hand QEMU an open file (SCM_RIGHTS, with the `getfd` command) that later commands name `fd:NAME`."""
        self._send(json.dumps({"execute": "getfd", "arguments": {"fdname": name}}).encode() + b"\n", "getfd", fd)

    def _send(self, message: bytes, command: str, fd: int | None = None) -> object:
        if fd is None:
            self.file.write(message)
            self.file.flush()
        else:
            self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        reply = self._read()
        if "error" in reply:
            raise QMPError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")


class SymbolMap:
    """Kernel text symbols from a build's System.map, for naming instruction pointers.

    Only for a kernel that is not relocated at boot (the harness's configs: no RANDOMIZE_BASE).
    """

    def __init__(self, system_map: Path):
        symbols: list[tuple[int, str]] = []
        for line in system_map.read_text().splitlines():
            addr, kind, name = line.split(maxsplit=2)
            if kind.lower() in ("t", "w"):  # text symbols
                symbols.append((int(addr, 16), name))
        symbols.sort()
        self.starts = [a for a, _ in symbols]
        self.names = [n for _, n in symbols]

    def name(self, addr: int) -> str:
        """"delay_tsc+0x30", "user space", or where it lies outside the kernel's text."""
        if addr < KERNEL_SPACE:
            return "user space"
        i = bisect.bisect_right(self.starts, addr) - 1
        return f"{self.names[i]}+{addr - self.starts[i]:#x}" if i >= 0 else "below the kernel's text"


def instruction_pointers(registers: str) -> dict[str, int]:
    """{"CPU#0": 0xffffffff813af8cf, ...} from `info registers -a`."""
    found = re.findall(r"^(CPU#\d+)\n(?:.*\n)*?RIP=([0-9a-f]+)", registers.replace("\r", ""), re.MULTILINE)
    return {cpu: int(rip, 16) for cpu, rip in found}


def post_mortem(channel: Channel, into: Path, system_map: Path | None = None, samples: int = 5) -> dict[str, str]:
    """Write registers.txt (every CPU) and screen.ppm (where the machine has a display) into `into`.

    Returns what was written or why not, by artifact: {"registers": path, "screen": "not captured: ..."},
    and, with the build's System.map, where each CPU was over `samples` looks 0.1 s apart, most
    often first: {"CPU#0": "delay_tsc 4/5, __alloc_skb 1/5"}. One look can land in an interrupt.
    """
    into.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    symbols = SymbolMap(system_map) if system_map and system_map.exists() else None
    try:
        qmp = channel.session()
    except QMPError as e:
        return {"qmp": str(e)}
    with qmp.lock:
        try:
            seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
            for n in range(samples):
                qmp.execute("stop")  # the registers of every CPU at one moment
                regs = str(qmp.execute("human-monitor-command", **{"command-line": "info registers -a"}))
                qmp.execute("cont")
                if n == 0:
                    (into / "registers.txt").write_text(regs)
                    found["registers"] = str(into / "registers.txt")
                for cpu, rip in instruction_pointers(regs).items():
                    seen[cpu][symbols.name(rip).split("+")[0] if symbols else f"RIP={rip:x}"] += 1
                time.sleep(0.1)
            found |= {cpu: ", ".join(f"{where} {k}/{samples}" for where, k in places.most_common())
                      for cpu, places in seen.items()}
        except (QMPError, OSError) as e:
            found["registers"] = f"not captured: {e}"
        screen = into / "screen.ppm"
        try:
            qmp.execute("screendump", filename=str(screen))
            found["screen"] = str(screen)
        except (QMPError, OSError) as e:  # e.g. -vga none and no display device: nothing to dump
            found["screen"] = f"not captured: {e}"
    return found


def dump(channel: Channel, dest: Path, fmt: str, timeout: float) -> None:
    """The guest's memory into `dest` (QEMU writes it; harness/vm/vmcore.py), the guest stopped meanwhile, so that
    its memory holds still while it is read, then let go on (a hung guest's dmesg is read next). Synchronous:
    QMP answers when the file is whole."""
    qmp = channel.session()
    with qmp.lock:
        qmp.sock.settimeout(timeout)
        try:
            qmp.execute("stop")
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{dest}", format=fmt)
            qmp.execute("cont")
        finally:
            qmp.sock.settimeout(qmp.timeout)


def save(found: dict[str, str], into: Path) -> None:
    """post-mortem.json next to the registers: what was kept, and why the rest was not."""
    if found:
        (into / "post-mortem.json").write_text(json.dumps(found, indent=1) + "\n")
