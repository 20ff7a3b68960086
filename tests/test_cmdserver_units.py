"""The command server's framing (harness/vm/cmdserver.py), and guest/programs/cmdserver.c itself run on the
host over pipes: it is a plain Linux program, so its process handling (exit, signal, timeout, stdin, large
and binary output, a background child, a host that goes away) is checked here in a second, without QEMU.
On a real guest over SSH: tests/test_cmdserver.py."""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from harness.vm.cmdserver import (
    EXITED,
    HELLO,
    MAX_REQUEST,
    SIGNALLED,
    TIMED_OUT,
    Exit,
    FrameReader,
    decode_exit,
    encode_request,
)
from harness.vm.ssh import CommandResult

# --- framing -------------------------------------------------------------------------------------------


def test_a_request_is_timeout_argc_each_argument_with_its_length_then_stdin():
    frame = encode_request(["ls", "-l"], 1.5, b"in")
    payload = (b"\x00\x00\x05\xdc" b"\x00\x00\x00\x02" b"\x00\x00\x00\x02ls" b"\x00\x00\x00\x02-l" b"in")
    assert frame == b"R" + struct.pack(">I", len(payload)) + payload


def test_a_request_without_timeout_says_zero_and_a_tiny_one_rounds_up_to_a_millisecond():
    assert encode_request(["true"], None)[5:9] == b"\0\0\0\0"
    assert encode_request(["true"], 0.0001)[5:9] == b"\0\0\0\1"
    assert encode_request(["true"], 1e9)[5:9] == b"\xff\xff\xff\xff"  # clamped, not wrapped


def test_arguments_are_utf8_bytes_counted_in_bytes():
    frame = encode_request(["é"], None)
    assert frame[13:19] == b"\x00\x00\x00\x02\xc3\xa9"


def test_what_the_server_cannot_carry_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="NUL"):
        encode_request(["echo", "a\0b"], 1)
    with pytest.raises(ValueError, match="empty"):
        encode_request([], 1)
    with pytest.raises(ValueError, match="more than the server takes"):
        encode_request(["cat"], 1, bytes(MAX_REQUEST))


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def test_frames_come_out_whole_however_the_stream_is_cut():
    stream = _frame(b"O", b"hello") + _frame(b"E", b"") + _frame(b"X", bytes(13))
    want = [(b"O", b"hello"), (b"E", b""), (b"X", bytes(13))]
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        got = []
        for piece in (stream[:cut], stream[cut:]):
            reader.feed(piece)
            while (frame := reader.next()) is not None:
                got.append(frame)
        assert got == want, cut
        assert reader.pending == 0


def test_byte_by_byte_a_frame_is_held_back_until_its_last_byte():
    reader = FrameReader()
    frame = _frame(b"O", b"abc")
    for byte in frame[:-1]:
        reader.feed(bytes([byte]))
        assert reader.next() is None
    reader.feed(frame[-1:])
    assert reader.next() == (b"O", b"abc")
    assert reader.next() is None


def test_an_exit_frame_says_how_the_command_ended():
    assert decode_exit(struct.pack(">BIQ", EXITED, 3, 1_500_000)) == Exit(EXITED, 3, 1.5)
    killed = decode_exit(struct.pack(">BIQ", SIGNALLED, 9, 10))
    assert (killed.exit_status, killed.signal) == (-1, 9)  # -1: what an exec channel says for a signal
    ok = decode_exit(struct.pack(">BIQ", EXITED, 0, 0))
    assert (ok.exit_status, ok.signal) == (0, None)
    assert decode_exit(struct.pack(">BIQ", TIMED_OUT, 9, 0)).signal == 9
    with pytest.raises(ValueError, match="how=7"):
        decode_exit(struct.pack(">BIQ", 7, 0, 0))


# --- the C server, on the host --------------------------------------------------------------------------


class Server:
    """cmdserver.c as a child process, spoken to as the host speaks to it over SSH."""

    def __init__(self, binary: Path):
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd="/tmp")
        self.reader = FrameReader()
        assert self.frame() == (b"H", HELLO)

    def frame(self, timeout: float = 10) -> tuple[bytes, bytes]:
        assert self.proc.stdout
        deadline = time.monotonic() + timeout
        while (frame := self.reader.next()) is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, "no frame in time"
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not data:
                return (b"", b"")  # the server ended
            self.reader.feed(data)
        return frame

    def send(self, data: bytes) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def run(self, argv: list[str], timeout: float | None = 10, stdin: bytes = b""
            ) -> tuple[bytes, bytes, Exit]:
        self.send(encode_request(argv, timeout, stdin))
        out, err = bytearray(), bytearray()
        while True:
            kind, payload = self.frame(timeout=(timeout or 10) + 10)
            if kind == b"O":
                out += payload
            elif kind == b"E":
                err += payload
            elif kind == b"X":
                return bytes(out), bytes(err), decode_exit(payload)
            else:
                raise AssertionError(f"unexpected frame {kind!r} {payload!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(server_binary: Path):
    s = Server(server_binary)
    yield s
    s.close()


def test_exit_status_and_stdout_and_stderr_apart(server: Server):
    out, err, end = server.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (out, err, end.how, end.exit_status) == (b"out\n", b"err\n", EXITED, 3)
    assert 0 < end.guest_s < 10


def test_argv_reaches_the_program_as_it_was_given_no_shell_between(server: Server):
    args = ["a b", "$HOME", "'quoted'", "*", ""]
    out, _, end = server.run(["printf", "[%s]\\n", *args])
    assert end.exit_status == 0
    assert out.decode().splitlines() == [f"[{a}]" for a in args]


def test_output_is_binary_safe_and_megabytes_long(server: Server):
    blob = bytes(range(256)) * 4096 * 5  # 5 MiB, every byte value
    out, err, end = server.run(["cat"], stdin=blob)
    assert end.exit_status == 0 and err == b""
    assert out == blob


def test_a_command_that_does_not_read_its_stdin_does_not_jam_the_stream(server: Server):
    out, _, end = server.run(["true"], stdin=b"x" * (3 << 20))
    assert (out, end.exit_status) == (b"", 0)
    out, _, end = server.run(["echo", "next"])
    assert (out, end.exit_status) == (b"next\n", 0)


def test_a_command_killed_by_a_signal_is_told_apart_from_an_exit(server: Server):
    _, _, end = server.run(["sh", "-c", "kill -TERM $$"])
    assert (end.how, end.signal, end.exit_status) == (SIGNALLED, signal.SIGTERM, -1)


def test_a_program_that_is_not_there_exits_127_and_one_that_cannot_run_126_saying_so(server: Server,
                                                                                      tmp_path: Path):
    _, err, end = server.run(["/no/such/program"])
    assert end.exit_status == 127
    assert b"/no/such/program: No such file or directory" in err
    data = tmp_path / "data"
    data.write_text("not a program\n")
    _, err, end = server.run([str(data)])
    assert end.exit_status == 126
    assert b"Permission denied" in err


def test_a_timeout_kills_the_whole_process_group_and_the_next_command_runs(server: Server, tmp_path: Path):
    pidfile = tmp_path / "grandchild"
    started = time.monotonic()
    _, _, end = server.run(["sh", "-c", f'sleep 60 & echo $! > {pidfile}; wait'], timeout=0.5)
    took = time.monotonic() - started
    assert end.how == TIMED_OUT and end.signal == signal.SIGKILL
    assert 0.5 <= took < 5, took
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild):  # killed with its group (a zombie until init reaps it: not running)
        assert time.monotonic() < deadline, "the background child outlived its command's timeout"
        time.sleep(0.05)
    out, _, end = server.run(["echo", "after"])
    assert (out, end.exit_status) == (b"after\n", 0)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_background_child_holding_the_pipes_does_not_hold_the_reply(server: Server, tmp_path: Path):
    # as over dropbear's exec channel: the reply comes when the command exits, with what it wrote
    # "at once" against "when the child ends": a minute apart, so a loaded host cannot blur them
    started = time.monotonic()
    out, _, end = server.run(["sh", "-c", f"sleep 60 & echo $! > {tmp_path}/child; echo hi"])
    assert (out, end.exit_status) == (b"hi\n", 0)
    assert time.monotonic() - started < 30
    os.kill(int((tmp_path / "child").read_text()), signal.SIGKILL)


def test_output_written_just_before_the_exit_is_all_there(server: Server):
    # the exit is often seen while the pipes still hold the last of the output
    for _ in range(20):
        out, err, end = server.run(["sh", "-c", "head -c 300000 /dev/zero; head -c 100000 /dev/zero >&2"])
        assert (len(out), len(err), end.exit_status) == (300000, 100000, 0)


def test_the_host_going_away_kills_the_running_command_and_ends_the_server(server: Server, tmp_path: Path):
    pidfile = tmp_path / "pid"
    server.send(encode_request(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], 100))
    deadline = time.monotonic() + 60  # waits only as long as the command takes to start
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    command = int(pidfile.read_text())
    assert server.proc.stdin
    server.proc.stdin.close()  # what dropbear does when the host closes the channel
    assert server.proc.wait(timeout=5) == 0
    deadline = time.monotonic() + 5
    while _alive(command):
        assert time.monotonic() < deadline, "the command outlived its server"
        time.sleep(0.05)


def test_a_malformed_request_is_refused_and_ends_the_server(server: Server):
    server.send(b"Z" + struct.pack(">I", 0))
    kind, payload = server.frame()
    assert kind == b"F" and b"bad request frame" in payload
    assert server.proc.wait(timeout=5) == 2
    server2 = Server(Path(server.proc.args[0]))  # type: ignore[index]
    try:
        bad = struct.pack(">II", 0, 5) + struct.pack(">I", 1000) + b"x"  # an argument longer than the frame
        server2.send(b"R" + struct.pack(">I", len(bad)) + bad)
        kind, payload = server2.frame()
        assert kind == b"F" and b"malformed request" in payload
        assert server2.proc.wait(timeout=5) == 2
    finally:
        server2.close()


def test_a_result_killed_by_a_signal_says_which_in_its_description():
    killed = CommandResult(("sleep", "9"), -1, "", "", 0.5, signal=signal.SIGKILL, guest_s=0.4)
    assert killed.describe().splitlines()[1] == "exit status -1 (killed by SIGKILL) after 0.50 s"
    unknown = CommandResult(("x",), -1, "", "", 0.5, signal=77)
    assert "(killed by signal 77)" in unknown.describe()
    plain = CommandResult(("true",), -1, "", "", 0.5)  # over an exec channel: no signal known
    assert plain.describe().splitlines()[1] == "exit status -1 after 0.50 s"


def test_closing_a_server_over_a_session_already_gone_does_not_raise() -> None:
    """VM.stop() closes every idle server's channel: over a transport the guest already dropped, paramiko raises
    EOFError (seen in test_four_vms_in_parallel's stop), which must not turn a stop into an error."""
    class GoneChannel:
        def close(self) -> None:
            raise EOFError()

    from harness.vm.cmdserver import CommandServer
    from harness.vm.limits import load

    CommandServer(None, GoneChannel(), load()).close()  # type: ignore[arg-type]
