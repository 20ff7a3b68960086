"""The test API of the harness: `Guest`, the one thing a suite author uses (through the `guest` fixture).

    from harness.guest import Guest

    def test_munmap(guest: Guest) -> None:
        _, info = guest.program("munmap")                # /guest/bin/munmap (guest/programs/munmap.c), its JSON
        events = guest.probe.events(pid=info["pid"])     # what the probe's notifier saw of that process
        guest.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)

A `Guest` is one test's view of the session's VM (harness/vm/pool.py boots and replaces it):
  run(argv, timeout, check)   a command in the guest (a CommandResult: exit_status, stdout, stderr, signal)
  program(name, *args)        a guest program (guest/programs/), which must exit 0 and print JSON last
  probe                       the mmu_probe module's events and controls (harness/observe/probe.py)
  dmesg                       the guest's kernel log since this test started (harness/observe/probe.py)
  ssh, vm                     the session and machine under it, for what the above does not cover
  dir, save(name, text)       this test's own results folder
After the test body the harness checks the guest (check_after_test): a dead QEMU or a crash is the test's
CRASH, a splat in its dmesg fails it (allow some with @pytest.mark.allow_splats), a watchdog that fired is
its TIMEOUT.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.classify import ResultsLost
from harness.observe import probe
from harness.results.outcome import GuestCrash, GuestTimeout, GuestUnreachable, HarnessFault
from harness.results.splat import Splat, find_splats, is_allowed
from harness.vm import faults, qmp
from harness.vm.machine import VM
from harness.vm.ssh import CommandResult, SSHError

if TYPE_CHECKING:
    from harness.vm.pool import VMs

CRASH_KINDS = {"panic", "oops", "BUG"}  # the rest (WARNING, KASAN, lockdep, ...) fail the test


class Guest:
    """One test's view of the guest: commands, guest programs, the probe, its own dmesg and artifacts."""

    def __init__(self, vms: VMs, vm: VM, test_dir: Path, label: str):
        assert vm.ssh
        self.vms = vms
        self.vm = vm
        self.ssh = vm.ssh
        self.dir = test_dir
        self.dmesg = probe.Dmesg(vm.ssh, label)
        self.probe = probe.Probe(vm.ssh)
        self.timed_out: float | None = None  # the watchdog's limit, once it fired
        self.post_mortem: dict[str, str] = {}  # what a timeout left: registers, screen, where the CPUs were

    def run(self, argv: Sequence[str], timeout: float = 60, check: bool = False) -> CommandResult:
        return self.ssh.run(argv, timeout=timeout, check=check)

    def program(self, name: str, *args: str, timeout: float = 60) -> tuple[CommandResult, dict]:
        """Run /guest/bin/NAME; it must exit 0 and print one JSON object as its last stdout line."""
        result = self.ssh.run([f"/guest/bin/{name}", *args], timeout=timeout)
        if not result.ok:
            pytest.fail(f"guest program {name} failed:\n{result.describe()}")
        lines = result.stdout.strip().splitlines()
        try:
            return result, json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(f"guest program {name} printed no JSON summary:\n{result.describe()}")

    def save(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def hold_for_gdb(self, what: str) -> None:
        """--gdb-on-crash: the crashed guest (held in its panic by panic=0) waits for gdb until Enter, said on the
        terminal (pytest captures stdout and stderr); without one (a CI) the command goes into the test's
        captured stderr, which its report shows, and the run goes on."""
        alive = bool(self.vm.console and self.vm.console.child.isalive())
        said = (f"\nharness: {what}\n  the guest is held in its panic; attach: {shlex.join(self.vm.gdb_command())}\n"
                if alive else f"\nharness: {what}; QEMU is gone, nothing to attach to\n")
        try:
            with open("/dev/tty", "r+") as tty:
                tty.write(said + ("  press Enter to go on (the guest is then stopped) " if alive else ""))
                tty.flush()
                if alive:
                    tty.readline()
        except OSError:
            print(said + "  (no terminal: not held)", file=sys.stderr, flush=True)

    def collect_post_mortem(self) -> dict[str, str]:
        """A timed-out guest, before it is stopped: (QMP) its registers and screen, first, since an
        SSH attempt wakes the guest's network; then dmesg if SSH still answers. Bounded: a wedged
        guest costs a few seconds here."""
        self.post_mortem |= self.vm.post_mortem(self.dir)
        try:
            self.save("dmesg.txt", self.dmesg.since_mark(timeout=10))
            self.post_mortem["dmesg"] = str(self.dir / "dmesg.txt")
        except (SSHError, OSError, RuntimeError) as e:
            self.post_mortem["dmesg"] = f"not captured: {e}"
        qmp.save(self.post_mortem, self.dir)
        return self.post_mortem

    def check_after_test(self, allow: list[str]) -> None:
        """Raise the fault this test left behind: a dead or crashed guest, or splats in its dmesg."""
        vm, console = self.vm, self.vm.console
        assert console
        if console.log_error:  # a result whose log is lost cannot be explained: not a verdict on the kernel
            raise ResultsLost(console.log_error)
        if self.timed_out is not None:
            raise GuestTimeout(f"test exceeded its {self.timed_out:g} s watchdog; QEMU was stopped",
                               vm.console_log)
        if crash := faults.dead(vm):  # the one wording of every command (harness/vm/faults.py)
            self.vms.discard()
            raise crash
        try:
            log = self.dmesg.since_mark()
        except (SSHError, OSError) as e:
            self.vms.discard()
            raise GuestUnreachable(f"guest stopped answering: {e}", vm.console_log) from None
        self.save("dmesg.txt", log)
        splats = [s for s in find_splats(log) if not is_allowed(s, allow)]
        if splats:
            self.vms.discard()  # a WARN or worse leaves the kernel suspect for the tests after this one
            raise _splat_fault(splats, self.dir / "dmesg.txt")


def _splat_fault(splats: list[Splat], dmesg: Path) -> HarnessFault | AssertionError:
    titles = "; ".join(s.title for s in splats)
    text = f"kernel splat(s) during the test: {titles}\n  dmesg: {dmesg}\n\n{splats[0].text}"
    if any(s.kind in CRASH_KINDS for s in splats):
        return GuestCrash(text)
    return AssertionError(text)

