"""The host's end of guest/programs/cmdserver.c: one command server per SSH session, on one exec channel.

A command over a channel of its own costs a channel open, dropbear's fork and `sh -c` in the guest; over
the server it costs one request frame and a fork+execve of the argument list. The framing (described in
cmdserver.c) is pure and tested on its own; CommandServer runs one command at a time over a paramiko
channel and says how it ended, leaving the classification (timeout, lost session) to harness/vm/ssh.py.
What the guest sends is bounded (harness/vm/limits.py): a frame's announced length before it is buffered,
a command's stdout and stderr as they grow. Past a limit is Flooded; a frame the server never sends (an
unknown type, a short exit frame) is MalformedFrame: a garbled channel, never a bare struct.error.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from harness.vm.limits import GuestLimits, size

SERVER_PATH = "/guest/bin/cmdserver"
HELLO = b"cmdserver 1"
MAX_REQUEST = 256 << 20  # cmdserver.c's MAX_REQUEST: a larger stdin goes over a channel of its own
_HEADER = struct.Struct(">cI")  # frame type, payload length
_U32 = struct.Struct(">I")
_EXIT = struct.Struct(">BIQ")  # how, exit status or signal, guest microseconds
EXITED, SIGNALLED, TIMED_OUT = 0, 1, 2
START_ATTEMPTS = 3
LAST_WORDS = 1 << 16  # what is read of a dead server's stderr (the last 300 characters are told)


def encode_request(argv: Sequence[str], timeout_s: float | None, stdin: bytes = b"") -> bytes:
    """An 'R' frame: run `argv` (no shell), killed after `timeout_s` (None: never), fed `stdin`."""
    if not argv:
        raise ValueError("an empty argument list")
    args = [a.encode("utf-8", "surrogateescape") for a in argv]
    if any(b"\0" in a for a in args):
        raise ValueError(f"an argument holds a NUL byte: {argv!r}")
    timeout_ms = 0 if timeout_s is None else min(max(1, math.ceil(timeout_s * 1000)), 2**32 - 1)
    payload = b"".join([_U32.pack(timeout_ms), _U32.pack(len(args)),
                        *(_U32.pack(len(a)) + a for a in args), stdin])
    if len(payload) > MAX_REQUEST:
        raise ValueError(f"a request of {len(payload)} bytes is more than the server takes ({MAX_REQUEST})")
    return _HEADER.pack(b"R", len(payload)) + payload


class MalformedFrame(ValueError):
    """A frame cmdserver.c never sends (an unknown type, an exit frame of the wrong size): a garbled channel."""


class Flooded(Exception):
    """The guest sent more than a limit (harness/vm/limits.py) allows: the message says what, and how much."""


class FrameReader:
    """Frames out of a byte stream that arrives in pieces of any size: feed() the pieces, next() the frames.

    A frame's length is checked against `max_frame` as soon as its header is in, before a byte of its
    payload is kept: Flooded, however many bytes it announces."""

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._length()

    def next(self) -> tuple[bytes, bytes] | None:
        """The first complete frame (type, payload), taken out; None until one is complete."""
        length = self._length()
        if length is None or len(self._buf) < _HEADER.size + length:
            return None
        end = _HEADER.size + length
        frame = (bytes(self._buf[:1]), bytes(memoryview(self._buf)[_HEADER.size:end]))
        del self._buf[:end]
        return frame

    def _length(self) -> int | None:
        """The payload length of the frame at the head of the buffer, once its header is in."""
        if len(self._buf) < _HEADER.size:
            return None
        _, length = _HEADER.unpack_from(self._buf)
        if length > self.max_frame:
            raise Flooded(f"the command server announced a frame of {length} bytes, more than the "
                          f"{size(self.max_frame)} a frame may hold")
        return int(length)

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buf)


@dataclass(frozen=True)
class Exit:
    how: int  # EXITED, SIGNALLED or TIMED_OUT
    code: int  # the exit status, or the signal that killed the command
    guest_s: float  # fork to reap, as the guest measured it

    @property
    def exit_status(self) -> int:
        """As over an exec channel: -1 for a command killed by a signal (paramiko's value for no status)."""
        return self.code if self.how == EXITED else -1

    @property
    def signal(self) -> int | None:
        return self.code if self.how != EXITED else None


def decode_exit(payload: bytes) -> Exit:
    if len(payload) != _EXIT.size:
        raise MalformedFrame(f"an exit frame of {len(payload)} bytes, not {_EXIT.size}")
    how, code, guest_us = _EXIT.unpack(payload)
    if how not in (EXITED, SIGNALLED, TIMED_OUT):
        raise MalformedFrame(f"an exit frame with how={how}")
    return Exit(how, code, guest_us / 1e6)


@dataclass(frozen=True)
class Reply:
    stdout: bytes | bytearray  # as received: a copy of megabytes would double the host's peak
    stderr: bytes | bytearray
    exit: Exit


class ServerGone(Exception):
    """The server's channel ended (the server died, or the whole session did)."""


class ServerStartedOver(ServerGone):
    """A hello where a reply was due: the port's server was killed in the guest and /init started another
    (images/init), which now waits for the next request."""


class ServerAbsent(Exception):
    """The guest has no command server (an image made before it, or without it)."""


class ServerFailed(Exception):
    """The server could not start the command (pipe, fork, memory): its message."""


class CommandServer:
    """One cmdserver on one exec channel of `transport`; one command at a time (the caller locks)."""

    def __init__(self, transport: paramiko.Transport | None, chan: paramiko.Channel | socket.socket,
                 limits: GuestLimits):
        self.transport = transport
        self.chan = chan
        self.limits = limits
        self._reader = FrameReader(limits.frame_bytes)

    @classmethod
    def start(cls, transport: paramiko.Transport, deadline: float, open_timeout: float,
              limits: GuestLimits) -> CommandServer:
        """Start the guest's server and wait for its hello. ServerAbsent if the guest has no such program;
        ServerGone if it ends before its hello for another reason (the session went); TimeoutError when no
        hello comes by `deadline`; paramiko's and the socket's errors as they come (no channel opened within
        `open_timeout`: "Timeout opening channel")."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return cls._start(transport, deadline, open_timeout, limits)
            except (paramiko.SSHException, ServerGone) as e:
                # Dropbear 2022.83 may refuse a channel ("Unable to open channel"), or close it at once, while
                # it still winds down another one that closed under a live process. A server started twice
                # is no harm (the first sees its channel end and exits): try again, briefly.
                refused = isinstance(e, ServerGone) or str(e) in ("Unable to open channel.", "Channel closed.")
                pause = 0.1 * attempt
                if (not refused or attempt == START_ATTEMPTS or not transport.is_active()
                        or time.monotonic() + pause >= deadline):
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, transport: paramiko.Transport, deadline: float, open_timeout: float,
               limits: GuestLimits) -> CommandServer:
        chan = transport.open_session(timeout=max(min(deadline - time.monotonic(), open_timeout), 0.1))
        server = cls(transport, chan, limits)
        try:
            chan.exec_command(SERVER_PATH)
            try:
                kind, payload = server.next_frame(deadline)
            except ServerGone:
                status = chan.recv_exit_status() if chan.exit_status_ready() else -1
                if status in (126, 127):  # the shell's "not found" / "cannot execute"
                    raise ServerAbsent(f"{SERVER_PATH}: {server.last_words()}") from None
                raise
            if (kind, payload) != (b"H", HELLO):
                raise ServerAbsent(f"{SERVER_PATH} said {kind!r} {payload[:100]!r} where its hello was due")
        except BaseException:
            server.close()
            raise
        return server

    def usable(self) -> bool:
        """Not known to be gone: a server that died between commands is seen here before a request is sent."""
        chan = self.chan
        assert self.transport and isinstance(chan, paramiko.Channel)
        return self.transport.is_active() and not (chan.closed or chan.eof_received or chan.exit_status_ready())

    def run(self, request: bytes, deadline: float) -> Reply:
        """Send an encode_request() frame; the reply. TimeoutError when it has not come by `deadline`,
        Flooded past a limit, MalformedFrame for a frame the server never sends (the channel is then of
        no more use: close it)."""
        self.chan.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            self.chan.sendall(request)
        except TimeoutError:
            raise TimeoutError("the guest took no more input") from None
        out, err = bytearray(), bytearray()
        while True:
            kind, payload = self.next_frame(deadline)
            if kind in (b"O", b"E"):
                stream, name = (out, "stdout") if kind == b"O" else (err, "stderr")
                if len(stream) + len(payload) > self.limits.output_bytes:
                    raise Flooded(f"the command's {name} passed {size(self.limits.output_bytes)}, starting "
                                  f"{bytes(stream[:60] or payload[:60])!r}")
                stream += payload
            elif kind == b"X":
                return Reply(out, err, decode_exit(payload))
            elif kind == b"F":
                raise ServerFailed(payload.decode(errors="replace"))
            elif (kind, payload) == (b"H", HELLO):
                raise ServerStartedOver("the command server started over")
            else:
                raise MalformedFrame(f"a frame of unknown type {kind!r}")

    def last_words(self) -> str:
        """After ServerGone: how the server's channel ended (exit status, its stderr)."""
        assert isinstance(self.chan, paramiko.Channel)
        status = self.chan.recv_exit_status() if self.chan.exit_status_ready() else None
        said = b""
        while self.chan.recv_stderr_ready() and len(said) < LAST_WORDS:  # a server that never stops: enough
            said += self.chan.recv_stderr(4096)
        end = "no exit status (killed by a signal?)" if status in (None, -1) else f"exit status {status}"
        text = said.decode(errors="replace").strip()
        return f"{end}{': ' + text[-300:] if text else ''}"

    def close(self) -> None:
        """Close the server's channel; over a session already gone (the guest dropped it) there is nothing to say,
        and paramiko would raise EOFError or OSError from a stop() that must not fail."""
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self.chan.close()

    def next_frame(self, deadline: float) -> tuple[bytes, bytes]:
        """The next frame from the guest: TimeoutError past `deadline`, ServerGone when the channel ends,
        Flooded for a frame longer than limits.frame_bytes."""
        while (frame := self._reader.next()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply from the command server")
            self.chan.settimeout(min(remaining, 1.0))
            try:
                data = self.chan.recv(1 << 16)
            except TimeoutError:  # a slice of the wait: look at the deadline again
                continue
            if not data:
                cut = f" {self._reader.pending} bytes into a frame" if self._reader.pending else ""
                raise ServerGone(f"the command server's channel ended{cut}")
            self._reader.feed(data)
        return frame


class PortServer(CommandServer):
    """The guest's server on its virtio-serial port (harness/vm/port.py): started by images/init, so there is no
    channel to open and no handshake, and a guest restored from a snapshot answers at once. There is one, and
    nothing reopens it: once closed here (after anything but a clean reply), the guest's server sees the end,
    kills its command and exits, and commands go over SSH."""

    def __init__(self, sock: socket.socket, limits: GuestLimits):
        super().__init__(None, sock, limits)
        self.closed = False

    @classmethod
    def greet(cls, sock: socket.socket, deadline: float, limits: GuestLimits) -> PortServer:
        """Take the hello the guest's server sent when /init started it; ServerAbsent when another comes."""
        server = cls(sock, limits)
        try:
            kind, payload = server.next_frame(deadline)
        except ServerGone:
            raise ServerAbsent("the guest's command port closed before its hello") from None
        except Flooded as e:
            server.close()
            raise ServerAbsent(f"the guest's command port garbled its hello: {e}") from None
        if (kind, payload) != (b"H", HELLO):
            server.close()
            raise ServerAbsent(f"the guest's command port said {kind!r} {payload[:100]!r} where its hello was due")
        return server

    def usable(self) -> bool:
        return not self.closed

    def last_words(self) -> str:
        return "its virtio-serial port closed: QEMU gone, or the server ended"

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.chan.close()
