"""The command port (harness/vm/port.py): guest/programs/cmdserver.c run on the host with one socket as its stdin
and stdout, as images/init runs it on the virtio-serial port, spoken to through harness/vm/ssh.py with no SSH
session at all, as a guest restored from a snapshot is; and the snapshot key's parts (harness/vm/snapshot.py).
On real guests: tests/test_snapshot_e2e.py."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.vm import pool, port, snapshot
from harness.vm.cmdserver import PortServer, ServerAbsent
from harness.vm.limits import GuestLimits
from harness.vm.machine import MachineError, Profile, qemu_argv
from harness.vm.ssh import SSH, CommandTimeout, SSHError

LIMITS = GuestLimits(frame_bytes=1 << 20, output_bytes=1 << 20, console_memory_bytes=1 << 20,
                     console_log_bytes=1 << 20)


@pytest.fixture
def on_port(server_binary: Path, tmp_path: Path) -> Iterator[tuple[SSH, subprocess.Popen[bytes]]]:
    """The server on one end of a socketpair (stdin and stdout both), the harness on the other: no SSH."""
    pair = port.Pair()
    proc = subprocess.Popen([str(server_binary)], stdin=pair.qemu_fd, stdout=pair.qemu_fd, cwd="/tmp")
    pair.handed_over()  # the server's fd 0 and 1 now, as the port is in the guest
    ssh = SSH(None, tmp_path / "commands.log", port=PortServer.greet(pair.ours, time.monotonic() + 10, LIMITS))
    yield ssh, proc
    ssh.close()
    proc.kill()
    proc.wait()


def test_a_command_runs_over_the_port_with_no_ssh_session(on_port):
    ssh, _ = on_port
    result = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.guest_s is not None  # the server's own measure: it ran there, not on a channel
    assert ssh.run(["cat"], stdin=b"fed").stdout == "fed"


def test_a_timeout_on_the_port_is_the_commands_and_the_port_serves_the_next(on_port):
    ssh, _ = on_port
    with pytest.raises(CommandTimeout):
        ssh.run(["sleep", "5"], timeout=0.5)
    assert ssh.port and ssh.port.usable()
    assert ssh.run(["echo", "next"]).stdout == "next\n"


def test_a_server_gone_mid_command_is_a_lost_channel_and_the_port_is_not_used_again(on_port):
    ssh, proc = on_port
    threading.Timer(0.5, proc.kill).start()
    with pytest.raises(SSHError, match="the guest's command port closed while running: sleep 5"):
        ssh.run(["sleep", "5"], timeout=10)
    assert ssh.port and not ssh.port.usable()
    # no port, no SSH session and nothing to connect with: said, not hung
    with pytest.raises(SSHError, match="no SSH session with the guest; cannot run: true"):
        ssh.run(["true"])


def test_a_second_command_while_the_port_is_busy_takes_ssh(on_port):
    ssh, _ = on_port
    busy = threading.Thread(target=ssh.run, args=(["sleep", "1"],))
    busy.start()
    time.sleep(0.3)
    try:
        with pytest.raises(SSHError, match="no SSH session with the guest; cannot run: echo beside"):
            ssh.run(["echo", "beside"])  # no session to connect here: the port was not waited for
    finally:
        busy.join()
    assert ssh.run(["echo", "after"]).stdout == "after\n"


@pytest.mark.parametrize("said, why", [(b"", "closed before its hello"), (b"H\0\0\0\3abc", "said b'H' b'abc'"),
                                       (b"Xjunk", "garbled its hello: .* announced a frame of")])
def test_a_port_that_does_not_greet_as_the_server_is_absent(said: bytes, why: str):
    pair = port.Pair()
    theirs = socket.socket(fileno=os.dup(pair.qemu_fd))
    pair.handed_over()
    theirs.sendall(said)
    theirs.close()
    with pytest.raises(ServerAbsent, match=why):
        PortServer.greet(pair.ours, time.monotonic() + 5, LIMITS)
    pair.close()


def test_the_port_and_an_incoming_snapshot_are_on_the_command_line():
    argv = qemu_argv(Profile("t", ""), Path("/k"), Path("/i"), 40022, "tcg", qmp_fd=7, port_fd=8, incoming_fd=9)
    assert "socket,id=harness-cmd,fd=8" in argv
    assert f"virtserialport,bus=harness-serial.0,chardev=harness-cmd,name={port.COMMAND_PORT}" in argv
    assert argv[argv.index("-incoming") + 1] == "fd:9"
    assert "-incoming" not in qemu_argv(Profile("t", ""), Path("/k"), Path("/i"), 40022, "tcg", port_fd=8)


def test_a_snapshot_key_ignores_ports_fds_and_the_vm_folder_and_nothing_else():
    vm_dir = Path("/r/vm-3")
    a = [snapshot._unplaced(x, vm_dir) for x in
         ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22", "socket,id=qmp,fd=7", "fd:9",
          "socket,id=gdb,path=/r/vm-3/gdb/socket,server=on,wait=off", "1024"]]
    assert a == ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:PORT-:22", "socket,id=qmp,fd=N", "fd:N",
                 "socket,id=gdb,path=VMDIR/gdb/socket,server=on,wait=off", "1024"]
    assert snapshot._unplaced("1536", vm_dir) == "1536"  # the memory size, a device, an append: all kept


def test_a_tests_isolation_group_is_itself_its_module_or_none():
    node = "suites/test_hmm.py::test_kernel_selftest[anon_write]"
    assert pool.isolation(node, None) is None  # shares the session's guest with the others of no group
    assert pool.isolation(node, "test") == node
    assert pool.isolation(node, "module") == "suites/test_hmm.py"
    assert pool.isolation(node, None, every_test=True) == pool.isolation(node, "module", every_test=True) == node
    with pytest.raises(MachineError, match="fresh_guest's scope is 'test' or 'module', not 'session'"):
        pool.isolation(node, "session")


def test_the_cache_keeps_the_snapshots_last_used_and_the_one_just_taken(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    made = []
    for n in range(snapshot.KEPT + 3):
        d = snapshot.root() / f"key{n:02}"
        d.mkdir(parents=True)
        (d / snapshot.META).write_text("{}")
        os.utime(d / snapshot.META, (1000 + n, 1000 + n))  # key00 the least recently used
        made.append(d)
    os.utime(made[1] / snapshot.META, (5000, 5000))  # used again since
    snapshot.prune(keep=made[0])  # just taken: never dropped, whatever its time says
    left = sorted(d.name for d in snapshot.root().iterdir())
    assert left == ["key00", "key01", *(f"key{n:02}" for n in range(5, snapshot.KEPT + 3))]
    assert len(left) == snapshot.KEPT
