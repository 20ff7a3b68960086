"""The attacker's check itself (tests/exposure.py), without QEMU: it must flag an abstract socket (what
QMP was before issue 18) and pass a filesystem socket in a 0700 directory and a socketpair."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import exposure

pytestmark = pytest.mark.skipif(not exposure.is_root(), reason="becoming uid 65534 needs root")


def test_an_abstract_socket_is_a_door_open_to_nobody():
    name = f"harness-qmp-{uuid.uuid4().hex}"  # the old QMP name, in this very process
    with exposure.abstract_listener(name):
        listed = [s for s in exposure.unix_sockets(os.getpid()) if s.name == "@" + name]
        assert listed and listed[0].listening  # world-readable /proc/net/unix gives its name away
        assert exposure.connect_as_nobody(["@" + name]) == {"@" + name: "connected"}
        assert f"unix socket @{name}: uid 65534 connected" in exposure.open_doors(os.getpid())


def test_a_socket_in_a_private_directory_and_a_socketpair_are_not():
    outer = Path(tempfile.mkdtemp(prefix="harness-exposure-"))  # nobody must be able to reach the 0700 one
    try:
        outer.chmod(0o755)
        for mode, expected in ((0o755, "connected"), (0o700, "refused: Permission denied")):
            where = outer / f"{mode:o}"
            where.mkdir()
            where.chmod(mode)
            path = str(where / "qmp.sock")
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(path)
                os.chmod(path, 0o777)  # the directory alone must keep others out
                listener.listen(1)
                assert path in {s.name for s in exposure.unix_sockets(os.getpid())}
                assert exposure.connect_as_nobody([path])[path] == expected, mode
        a, b = socket.socketpair()
        with a, b:  # no name: nothing to connect to
            assert {s.name for s in exposure.unix_sockets(os.getpid()) if s.inode in _inodes(a, b)} == {""}
    finally:
        shutil.rmtree(outer)


def _inodes(*socks: socket.socket) -> set[int]:
    return {os.fstat(s.fileno()).st_ino for s in socks}


def test_a_tcp_listener_off_loopback_is_flagged():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert f"TCP listener on 00000000:{port} is not on loopback" in exposure.open_doors(os.getpid())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert not [d for d in exposure.open_doors(os.getpid()) if "TCP" in d]
