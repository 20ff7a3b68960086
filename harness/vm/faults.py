"""How a VM's work ended, said one way for every command: `harness run` (the pytest plugin), `trace`,
`shell`, `evidence`, `bench` and `soak` all turn a dead QEMU, a kernel crash on the console, a command
past its timeout, a lost SSH channel and a guest that sends more than the host takes (harness/vm/limits.py)
into the same outcome (harness/results/outcome.py), with the same words and the console log's path.

    with guarded(vm, "booting") as work:
        vm.start(...)
        work.doing = f"{program} ran"
        vm.ssh.run(...)

Whatever leaves the block as a fault of the machine leaves as a HarnessFault (GuestCrash, GuestTimeout,
GuestFlooded, GuestUnreachable, or the BootError the boot raised), which harness/cli/main.py prints as one
paragraph with exit status 2. A block that ends normally is still checked: a kernel that oopsed or a QEMU that died
while the work seemed to succeed is a CRASH, and one that flooded its console a FLOOD, not a result.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.results.outcome import GuestCrash, GuestFlooded, GuestTimeout, GuestUnreachable, HarnessFault
from harness.vm import qmp
from harness.vm.console import Console
from harness.vm.ssh import SSH, CommandFailed, CommandFlooded, CommandTimeout, SSHError


class VM(Protocol):
    """What the fault path reads of a machine (harness/vm/machine.py's VM), and no more: so the
    machine can use this module without the two importing each other."""

    workdir: Path
    console: Console | None
    ssh: SSH | None

    @property
    def console_log(self) -> Path: ...

    def post_mortem(self, into: Path) -> dict[str, str]: ...

CHANNEL_GRACE_S = 3.0  # a lost channel may be QEMU dying: its sockets close before its exit is seen


def qemu_end(exit_status: int | None) -> str:
    """"QEMU died (killed by SIGKILL)", "QEMU died (exit status 1)"."""
    if exit_status is not None and exit_status < 0:
        try:
            return f"QEMU died (killed by {signal.Signals(-exit_status).name})"
        except ValueError:
            return f"QEMU died (killed by signal {-exit_status})"
    return f"QEMU died (exit status {exit_status})"


def dead(vm: VM, doing: str = "") -> HarnessFault | None:
    """The fault that ends the machine's use: a CRASH when the guest kernel crashed (a fatal splat on the
    console) or QEMU is gone, a FLOOD when the guest printed past the console's limit; else None."""
    console = vm.console
    if console is None:
        return None
    while_ = f" while {doing}" if doing else ""
    if fatal := console.fatal_splat():
        return GuestCrash(f"kernel crashed: {fatal.title}{while_}", vm.console_log)
    if console.flooded:  # before QEMU's end: the flood came first
        return GuestFlooded(f"{console.flooded}{while_}", vm.console_log)
    if not console.child.isalive():
        console.wait_exit(2)  # reaped by the reader thread: its exit status
        # An oops that did not panic can still end QEMU: nested KVM's L1 oopsed in its vCPU fault path and reset
        # at once (a triple fault; -no-reboot then ends QEMU with status 0). The splat is the likelier cause.
        after = f" after {splats[-1].title} on the console" if (splats := console.splats) else ""
        return GuestCrash(f"{qemu_end(console.exit_status)}{after}{while_}", vm.console_log)
    return None


def explain(vm: VM, exc: BaseException, doing: str = "",
            keep: Callable[[], dict[str, str]] | None = None) -> HarnessFault | None:
    """The machine's fault behind `exc`, or None when `exc` is not one (a command that ran and failed,
    a test's assertion, a bug): the fault that explains most wins, a dead machine over its symptoms.

    keep: what keeps a wedged guest's post-mortem before it is stopped (default: post_mortem(vm))."""
    if isinstance(exc, HarnessFault):
        return exc  # already classified where it happened (a boot, the test watchdog)
    if not isinstance(exc, SSHError) or isinstance(exc, CommandFailed):
        return None
    if isinstance(exc, CommandFlooded):  # the guest answered, too much: no sign of a dying QEMU to wait for
        return dead(vm, doing) or GuestFlooded(str(exc), vm.console_log)
    if vm.console and not isinstance(exc, CommandTimeout):  # a timeout is no sign of a dying QEMU
        vm.console.wait_exit(CHANNEL_GRACE_S)
    if crash := dead(vm, doing):
        return crash
    if isinstance(exc, CommandTimeout):
        found = (keep or (lambda: post_mortem(vm)))()
        # A command that hangs in a live guest, or a guest that hangs: one more short command tells them apart.
        state = "the guest still answers" if _answers(vm) else "the guest no longer answers: it hangs"
        fault = GuestTimeout(f"{exc} ({state})", vm.console_log)
        fault.post_mortem = found
        return fault
    while_ = f" while {doing}" if doing else ""
    return GuestUnreachable(f"guest stopped answering{while_}: {exc}", vm.console_log)


def _answers(vm: VM, timeout: float = 5) -> bool:
    if not vm.ssh:
        return False
    try:
        return vm.ssh.run(["true"], timeout=timeout).ok
    except SSHError:
        return False


def post_mortem(vm: VM) -> dict[str, str]:
    """What a wedged guest was doing, kept before it is stopped (registers, screen: harness/vm/qmp.py)."""
    into = vm.workdir / "post-mortem"
    found = vm.post_mortem(into)
    if found:
        qmp.save(found, into)
    return found


@dataclass
class Work:
    doing: str = ""


@contextmanager
def guarded(vm: VM, doing: str = "") -> Iterator[Work]:
    """Run a command's work on `vm`; a fault of the machine leaves as the one HarnessFault that explains it.

    Ctrl-C and SIGTERM (harness/vm/console.py) go through untouched: the CLI reports them (exit 130).
    """
    work = Work(doing)
    try:
        yield work
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as e:
        fault = explain(vm, e, work.doing)
        if fault is None or fault is e:
            raise
        raise fault from None
    if crash := dead(vm, work.doing):
        raise crash
