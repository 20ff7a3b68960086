"""Sockets handed to QEMU: one end of a socketpair for a chardev (`-chardev socket,fd=N`), the other kept here.

A socketpair has no name, so no other local user can reach what is behind it: QMP (harness/vm/qmp.py), and
the guest's command server on a virtio-serial port (`-device virtserialport,name=harness.cmd`; images/init
starts guest/programs/cmdserver.c on it). That port needs no handshake, unlike an SSH session, and it
outlives a snapshot: a guest restored from one (harness/vm/snapshot.py) answers on it at once.
"""

from __future__ import annotations

import socket

COMMAND_PORT = "harness.cmd"  # the port's name, which images/init looks for in /sys/class/virtio-ports


class Pair:
    """One socketpair: `qemu_fd` goes to QEMU (and is closed here once QEMU has it), `ours` stays with the
    harness for the VM's life, and shows QEMU's exit as EOF."""

    def __init__(self) -> None:
        # Both ends close-on-exec (Python's default): only the QEMU child gets its end, through pass_fds.
        self.ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    @property
    def qemu_fd(self) -> int:
        return self._theirs.fileno()

    def handed_over(self) -> None:
        """QEMU holds its own copy of the fd now: drop ours."""
        self._theirs.close()

    def close(self) -> None:
        self._theirs.close()
        self.ours.close()


def command_port_args(fd: int) -> list[str]:
    """A virtio-serial port named COMMAND_PORT on a client chardev over an already connected socket."""
    return ["-device", "virtio-serial-pci,id=harness-serial",
            "-chardev", f"socket,id=harness-cmd,fd={fd}",
            "-device", f"virtserialport,bus=harness-serial.0,chardev=harness-cmd,name={COMMAND_PORT}"]
