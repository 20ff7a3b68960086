"""Every read from the guest is bounded (harness/vm/limits.py): the limits themselves, the command channel's
frames from a hostile server, and a command's output past its cap, with the real guest/programs/cmdserver.c
run on the host over a socketpair (the channel CommandServer reads is a socket's recv/sendall/settimeout).
On a real guest: tests/test_guest_floods.py."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.results.outcome import SEVERITY, GuestFlooded, Outcome
from harness.vm import limits
from harness.vm.cmdserver import (
    HELLO,
    CommandServer,
    Flooded,
    FrameReader,
    MalformedFrame,
    ServerGone,
    decode_exit,
    encode_request,
)
from harness.vm.limits import GuestLimits, LimitsError
from harness.vm.ssh import DESCRIBED_OUTPUT, CommandFlooded, CommandResult, take_output

MIB = 1 << 20
SMALL = GuestLimits(frame_bytes=MIB, output_bytes=4 * MIB, console_memory_bytes=MIB, console_log_bytes=MIB)


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


# --- the limits --------------------------------------------------------------------------------------------


def test_the_defaults_come_from_configs_and_each_can_be_overridden_by_its_variable():
    default = limits.load({})
    assert default == GuestLimits(frame_bytes=MIB, output_bytes=32 * MIB, console_memory_bytes=MIB,
                                  console_log_bytes=64 * MIB)
    assert limits.load({"HARNESS_LIMIT_OUTPUT_BYTES": "128M"}) == replace(default, output_bytes=128 * MIB)
    assert limits.load({"HARNESS_LIMIT_CONSOLE_LOG_BYTES": "1G"}).console_log_bytes == 1 << 30
    assert limits.load({"HARNESS_LIMIT_FRAME_BYTES": "70000"}).frame_bytes == 70000


def test_a_limit_that_is_no_size_or_too_small_is_refused_naming_where_it_came_from():
    with pytest.raises(LimitsError, match="environment variable HARNESS_LIMIT_OUTPUT_BYTES: 'lots' is not a size"):
        limits.load({"HARNESS_LIMIT_OUTPUT_BYTES": "lots"})
    with pytest.raises(LimitsError, match="HARNESS_LIMIT_FRAME_BYTES: 1024 bytes is below the least"):
        limits.load({"HARNESS_LIMIT_FRAME_BYTES": "1K"})  # the server's 64 KiB pieces would never fit


def test_flood_is_an_outcome_of_its_own_that_fails_a_run():
    assert GuestFlooded("the guest flooded").outcome == Outcome.FLOOD
    assert SEVERITY.index(Outcome.FLOOD) < SEVERITY.index(Outcome.FAIL) < SEVERITY.index(Outcome.INFRA)


# --- frames from a hostile guest ------------------------------------------------------------------------


def test_a_huge_length_is_refused_from_its_header_before_a_byte_of_it_is_kept():
    reader = FrameReader(max_frame=MIB)
    tracemalloc.start()
    try:
        with pytest.raises(Flooded, match="announced a frame of 4294967295 bytes, more than the 1 MiB"):
            reader.feed(b"O\xff\xff\xff\xff" + b"x" * 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_frame_of_exactly_the_limit_passes_and_one_byte_more_does_not():
    reader = FrameReader(max_frame=70000)
    reader.feed(_frame(b"O", bytes(70000)))
    assert reader.next() == (b"O", bytes(70000))
    with pytest.raises(Flooded):
        reader.feed(_frame(b"O", bytes(70001))[:5])  # the header alone is enough to refuse it


def test_a_truncated_frame_is_held_back_and_said_to_be_cut_when_the_channel_ends():
    reader = FrameReader()
    reader.feed(_frame(b"O", b"hello")[:7])
    assert reader.next() is None and reader.pending == 7
    ends, served = socket.socketpair()
    with ends, served:
        served.sendall(_frame(b"X", bytes(13))[:9])
        served.shutdown(socket.SHUT_WR)
        server = CommandServer(None, ends, SMALL)  # type: ignore[arg-type]  # no transport: run() never uses it
        with pytest.raises(ServerGone, match="ended 9 bytes into a frame"):
            server.run(encode_request(["true"], 5), time.monotonic() + 5)


@pytest.mark.parametrize(("payload", "said"), [(b"\x00\x00\x00\x00\x03", "an exit frame of 5 bytes, not 13"),
                                               (b"", "an exit frame of 0 bytes, not 13"),
                                               (struct.pack(">BIQ", 9, 0, 0), "an exit frame with how=9")])
def test_a_malformed_exit_frame_is_a_garbled_channel_not_a_struct_error(payload: bytes, said: str):
    with pytest.raises(MalformedFrame, match=said):
        decode_exit(payload)


class Hostile:
    """A 'command server' that sends what it is told to, then holds the channel open."""

    def __init__(self, script: bytes):
        self.ours, self.theirs = socket.socketpair()
        self.thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self.thread.start()

    def _serve(self, script: bytes) -> None:
        try:
            self.theirs.recv(1 << 16)  # the request
            self.theirs.sendall(script)
        except OSError:
            pass  # the host hung up: its right

    def run(self, limits_: GuestLimits = SMALL) -> object:
        server = CommandServer(None, self.ours, limits_)  # type: ignore[arg-type]
        return server.run(encode_request(["cmd"], 5), time.monotonic() + 10)

    def close(self) -> None:
        self.ours.close()
        self.thread.join(5)
        self.theirs.close()


@pytest.fixture
def hostile() -> Iterator[list[Hostile]]:
    made: list[Hostile] = []
    yield made
    for h in made:
        h.close()


@pytest.mark.parametrize(("script", "error", "said"), [
    (_frame(b"X", b"\x00\x01"), MalformedFrame, "an exit frame of 2 bytes"),
    (_frame(b"Z", b"?"), MalformedFrame, "a frame of unknown type b'Z'"),
    (b"O\xff\xff\xff\xff", Flooded, "announced a frame of 4294967295 bytes"),
    (_frame(b"O", b"y\n" * 30000) * 80, Flooded, r"the command's stdout passed 4 MiB, starting b'y\\ny\\n"),
    (_frame(b"E", b"e" * 65536) * 80, Flooded, "the command's stderr passed 4 MiB"),
], ids=["short-exit", "unknown-type", "huge-length", "stdout-flood", "stderr-flood"])
def test_a_hostile_server_ends_in_a_named_fault(hostile: list[Hostile], script: bytes, error: type, said: str):
    h = Hostile(script)
    hostile.append(h)
    with pytest.raises(error, match=said):
        h.run()


def test_output_of_exactly_the_limit_comes_back_whole(hostile: list[Hostile]):
    h = Hostile(_frame(b"O", b"o" * 65536) * 64 + _frame(b"E", b"e" * 65536) * 64
                + _frame(b"X", struct.pack(">BIQ", 0, 0, 5)))
    hostile.append(h)
    reply = h.run()
    assert reply.stdout == b"o" * 4 * MIB and reply.stderr == b"e" * 4 * MIB  # type: ignore[attr-defined]


# --- the real server, flooding ----------------------------------------------------------------------------


@pytest.fixture
def served(server_binary: Path) -> Iterator[tuple[CommandServer, subprocess.Popen[bytes]]]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([str(server_binary)], stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL,
                            cwd="/tmp")
    theirs.close()
    server = CommandServer(None, ours, SMALL)  # type: ignore[arg-type]
    assert server.next_frame(time.monotonic() + 10) == (b"H", HELLO)
    yield server, proc
    ours.close()
    proc.wait(10)


def test_a_command_that_writes_without_end_floods_with_bounded_host_memory(served):
    """`yes` on the real server: the reply stops at the 4 MiB cap, the host held little more than the cap,
    and closing the channel (what ssh.py does after a flood) ends the command and the server."""
    server, proc = served
    tracemalloc.start()
    try:
        with pytest.raises(Flooded, match="the command's stdout passed 4 MiB, starting b'y\\\\ny\\\\n"):
            server.run(encode_request(["yes"], 30), time.monotonic() + 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB + 2 * MIB, f"{peak / MIB:.1f} MiB"  # the cap, and a frame or two on the way
    server.close()
    assert proc.wait(10) == 0  # EOF on its stdin: it kills `yes` and ends


def test_under_the_cap_the_real_server_replies_in_full(served):
    server, _ = served
    reply = server.run(encode_request(["head", "-c", str(4 * MIB), "/dev/zero"], 30), time.monotonic() + 30)
    assert len(reply.stdout) == 4 * MIB and reply.exit.exit_status == 0


def test_an_exec_channels_output_is_bounded_the_same_way():
    """ssh.py's fallback, a channel per command, reads its output through take_output(), against the same cap."""
    out = bytearray()
    take_output(out, b"y\n" * 1000, 2001, "stdout", "yes")
    with pytest.raises(CommandFlooded, match=r"the guest flooded: the command's stdout passed 2001 bytes, "
                                             r"starting b'y\\ny\\n.* while running: yes"):
        take_output(out, b"y\n", 2001, "stdout", "yes")
    assert out == b"y\n" * 1000


def test_a_long_output_is_described_by_its_start_and_its_end():
    """commands.log and every error message carry at most DESCRIBED_OUTPUT characters of each stream: a 32 MiB
    output once filled commands.log with 32 MiB a command."""
    stdout = "first line\n" + "y\n" * (MIB // 2) + "last line\n"
    text = CommandResult(("yes",), 0, stdout, "", 1.0).describe()
    assert len(text) < DESCRIBED_OUTPUT + 200
    assert "--- stdout\nfirst line\n" in text and text.endswith("last line\n--- stderr\n")
    assert f"[... {len(stdout) - DESCRIBED_OUTPUT} characters left out ...]" in text
    short = CommandResult(("echo",), 0, "hi\n", "", 1.0).describe()
    assert short.endswith("--- stdout\nhi\n--- stderr\n")
