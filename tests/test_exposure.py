"""No door left open (issue 18): while a harness VM runs, every unix socket QEMU holds with a name refuses
uid 65534, every TCP listener it has is on loopback, and its console pty is the harness's alone.

The same check, on a QEMU given the QMP arguments the harness used before (an abstract socket), finds
the door: tests/test_exposure_units.py shows it on a plain listener, test_the_old_qmp_socket_* on QEMU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harness.kernel.prepare import prepare
from harness.vm import qmp
from harness.vm.machine import VM, load_profile, qemu_binary
from tests import exposure

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not exposure.is_root(), reason="becoming uid 65534 needs root")]


def _qemu(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """A QEMU with no machine (nothing to boot): only its monitor channels matter here."""
    return subprocess.Popen([qemu_binary(), "-nodefaults", "-display", "none", "-machine", "none", *args],
                            pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "QEMU did not come up"
        time.sleep(0.05)


def test_the_old_qmp_socket_is_a_door_and_the_socketpair_is_not():
    name = f"harness-qmp-{uuid.uuid4().hex}"
    old = _qemu("-chardev", f"socket,id=qmp,path={name},abstract=on,server=on,wait=off",
                "-mon", "chardev=qmp,mode=control")
    try:
        _until(lambda: any(s.name == "@" + name for s in exposure.unix_sockets(old.pid)))
        assert exposure.open_doors(old.pid) == [f"unix socket @{name}: uid 65534 connected"]
    finally:
        old.kill()
        old.wait()

    channel = qmp.Channel()
    new = _qemu(*channel.qemu_args(), pass_fds=(channel.qemu_fd,))
    channel.handed_over()
    try:
        assert channel.session().execute("query-status") == {"status": "running", "singlestep": False,
                                                             "running": True}
        assert [s.name for s in exposure.unix_sockets(new.pid)] == [""]  # one socket, and it has no name
        assert exposure.open_doors(new.pid) == []
    finally:
        new.kill()
        new.wait()
        channel.close()


def test_a_running_vm_opens_no_door(tmp_path: Path):
    prepared = prepare(None, "on")
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path / "vm")
    try:
        vm.start(boot_timeout=120)
        assert vm.console and vm.ssh
        pid = vm.console.pid
        assert exposure.open_doors(pid) == []
        listeners = exposure.tcp_listeners(pid)
        assert [(t.port, t.loopback) for t in listeners] == [(vm.ssh_port, True)]  # the SSH forward, no other
        named = [s.name for s in exposure.unix_sockets(pid) if s.name]
        assert named == [], named
        # Reachable by the harness all the same: the post-mortem's registers come over that socketpair.
        found = vm.post_mortem(tmp_path / "pm")
        assert Path(found["registers"]).read_text().count("RIP=") >= 1, found
        # The forward answers, on loopback only (the pinned host key guards what answers there).
        with socket.create_connection(("127.0.0.1", vm.ssh_port), timeout=5) as s:
            assert s.recv(64).startswith(b"SSH-2.0-")
        tty = os.readlink(f"/proc/{pid}/fd/0")
        assert tty.startswith("/dev/pts/") and os.stat(tty).st_mode & 0o777 == 0o600
    finally:
        vm.stop()
