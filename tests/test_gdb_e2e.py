"""`harness shell --gdb` and `harness run --gdb-on-crash`: QEMU's gdb stub on a unix socket in a directory only the
harness's user can enter, which a gdb remote client reaches (a stop-reason query answered), and the command that
attaches is the one printed."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from harness.kernel.prepare import prepare
from harness.vm.machine import VM, load_profile
from tests import exposure

pytestmark = pytest.mark.e2e


def _packet(body: bytes) -> bytes:
    return b"$" + body + b"#" + f"{sum(body) % 256:02x}".encode()


def test_the_gdb_stub_answers_on_a_private_socket(tmp_path: Path) -> None:
    prepared = prepare()
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path / "vm", gdb=True)
    try:
        vm.start(boot_timeout=240, connect_ssh=False)
        sock_path = vm.gdb_socket
        assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700, "no other user may reach the stub"
        assert vm.console and exposure.open_doors(vm.console.pid) == []  # tried as uid 65534, as an attacker would
        assert vm.argv[vm.argv.index("-gdb"):vm.argv.index("-gdb") + 2] == ["-gdb", "chardev:gdb"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gdb:
            gdb.settimeout(30)
            gdb.connect(str(sock_path))
            gdb.sendall(_packet(b"?"))  # why did the target stop: the stub halts the guest and says
            reply = b""
            while b"#" not in reply.lstrip(b"+"):
                reply += gdb.recv(4096)
        assert reply.lstrip(b"+").startswith((b"$S", b"$T")), reply
        command = vm.gdb_command()
        assert command[-2:] == ["-ex", f"target remote {sock_path}"] and command[4].endswith("/vmlinux")
    finally:
        vm.stop()


def test_gdb_on_crash_holds_the_panicked_guest_and_says_how_to_attach(tmp_path: Path) -> None:
    """A planted panic under `harness run --gdb-on-crash`: its guest had the stub and panic=0 (held in its panic),
    and the command that attaches is printed; without a terminal the run goes on, and the test is a CRASH."""
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", f"--results-dir={run}", "--gdb-on-crash",
                           "--reruns=0", "--guest-modules=fault_inject", "-k", "test_panic",
                           str(paths.REPO / "tests/fault_suite/test_inject.py")], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=600, start_new_session=True)  # no controlling terminal: not held
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = json.loads((run / "outcomes.json").read_text())
    assert result["outcome"] == "CRASH" and "panic on request" in result["reason"], result
    argv = json.loads((Path(result["console_log"]).parent / "qemu-argv.json").read_text())
    assert "-gdb" in argv and "panic=0" in argv[argv.index("-append") + 1].split()
    socket_path = Path(result["console_log"]).parent / "gdb" / "socket"
    said = done.stdout  # no terminal: in the test's captured stderr, which pytest's report of it shows
    assert "the guest is held in its panic; attach: gdb -q " in said, said[-3000:]
    assert f"target remote {socket_path}'" in said and "(no terminal: not held)" in said
    ended = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--gdb-on-crash", "-j", "2", "x.py"],
                           cwd=paths.REPO, capture_output=True, text=True, timeout=60)
    assert ended.returncode == 2 and "one worker only" in ended.stderr
