"""The command channel: the guest's virtio-serial command port, and paramiko to its dropbear, host key pinned.

Commands are argument lists. They go to a command server in the guest (guest/programs/cmdserver.c), which
execs them without a shell: first the one /init started on the virtio-serial port (harness/vm/port.py: no
handshake, and a guest restored from a snapshot answers there at once, with no SSH session yet, which then
connects at the first command the port cannot take); then servers on long-lived exec channels, started at the
session's first such command (harness/vm/cmdserver.py). A thread whose command finds the servers busy (a fault
injected from another thread under a workload) gets a server of its own, up to MAX_SERVERS, and never waits
behind another thread's command. Beyond that, in a guest without the server, or with `own_channel=True`, a
command takes an exec channel of its own, as every command did before the server: dropbear runs it with
`sh -c`, quoted here with shlex.join. (Dropbear 2022.83 sometimes refuses or closes a channel when two are opened
and closed at once: one more reason for long-lived channels.) No shell string is ever built from input. Both
paths say the same: a command killed by a signal has exit status -1 (the server also names the signal), a
timeout is CommandTimeout, a session gone under a command is SSHError, output past a limit of
harness/vm/limits.py is CommandFlooded; the reply comes when the command exits, even if a background child
still holds its stdout. Files are copied by feeding them to `cat` (dropbear has no SFTP server in the image).
"""

from __future__ import annotations

import base64
import logging
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.vm import limits as guest_limits
from harness.vm.cmdserver import (
    TIMED_OUT,
    CommandServer,
    Flooded,
    MalformedFrame,
    PortServer,
    Reply,
    ServerAbsent,
    ServerFailed,
    ServerGone,
    ServerStartedOver,
    encode_request,
)
from harness.vm.limits import GuestLimits

# The server kills a command at its timeout and says so; the host waits this much longer before it
# takes the silence for a guest that no longer runs.
SERVER_REPLY_GRACE_S = 2.0
MAX_SERVERS = 4  # command servers per session (threads at once); a thread beyond takes an exec channel
RECONNECT_SETTLE_S = 0.5
# Of a command's stdout and of its stderr, what commands.log and an error message show: a command may print
# up to limits.output_bytes, and a copy of that in every log line and message would be the host's to hold.
DESCRIBED_OUTPUT = 16384

# paramiko logs a failure of its transport thread (a connection reset by a QEMU dying as it is reached) with
# a traceback, on stderr when nothing else handles its records; the same failure reaches the caller as an
# exception, which the harness reports in its own words.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class SSHError(Exception):
    pass


class CommandTimeout(SSHError):
    pass


class CommandFailed(SSHError):
    """A command that ran and exited non-zero (check=True): a result, not a lost channel."""


class CommandFlooded(SSHError):
    """The guest sent more than a limit allows while a command ran (harness/vm/limits.py): the command's
    outcome is unknown, and its channel is dropped. The command server then kills the command; dropbear
    leaves the command of an exec channel running, as after a timeout."""


class CommandServerLost(SSHError):
    """The guest's command server ended while a command ran on it (killed in the guest), the session still up:
    the command's outcome is unknown. The next command starts a new server."""


class PortServerStartedOver(CommandServerLost):
    """The port's server was killed under a command, and another took its place: the port goes on serving."""


class CommandNotStarted(SSHError):
    """The guest's command server could not start the command (pipe, fork, memory); it waits for the next."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float  # the round trip, as the host saw it
    signal: int | None = None  # what killed it (exit_status -1); known over the command server only
    guest_s: float | None = None  # fork to exit in the guest; known over the command server only

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        status = f"exit status {self.exit_status}"
        if self.signal is not None:
            try:
                status += f" (killed by {signal.Signals(self.signal).name})"
            except ValueError:
                status += f" (killed by signal {self.signal})"
        return (f"$ {shlex.join(self.argv)}\n{status} after {self.duration_s:.2f} s\n"
                f"--- stdout\n{_excerpt(self.stdout)}--- stderr\n{_excerpt(self.stderr)}")


def _excerpt(text: str, head: int = DESCRIBED_OUTPUT // 4, tail: int = DESCRIBED_OUTPUT * 3 // 4) -> str:
    """A command's output as commands.log and error messages show it: whole up to DESCRIBED_OUTPUT
    characters, else its start and its end (where a failure says why)."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters left out ...]\n{text[-tail:]}"


def take_output(into: bytearray, data: bytes, limit: int, name: str, command: str) -> None:
    """An exec channel's output, bounded as the command server's is (harness/vm/cmdserver.py)."""
    if len(into) + len(data) > limit:
        raise CommandFlooded(f"the guest flooded: the command's {name} passed {guest_limits.size(limit)}, "
                             f"starting {bytes(into[:60] or data[:60])!r} while running: {command}")
    into += data


def pinned_client(port: int, host_key_pub: Path) -> paramiko.SSHClient:
    """A client that knows exactly one host key for [127.0.0.1]:port and rejects every other."""
    kind, b64 = host_key_pub.read_text().split()[:2]
    if kind != "ssh-ed25519":
        raise SSHError(f"{host_key_pub}: expected an ssh-ed25519 key, found {kind}")
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[127.0.0.1]:{port}", kind, paramiko.Ed25519Key(data=base64.b64decode(b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _still_active(transport: paramiko.Transport, grace: float = 1.0) -> bool:
    """Whether the session outlives a short grace: its end is seen a moment after the channel's."""
    deadline = time.monotonic() + grace
    while transport.is_active():
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def _no_delay(client: paramiko.SSHClient) -> None:
    """TCP_NODELAY on the session's socket. A request is one small packet; sent right after another small one
    that is not acknowledged yet (an exec channel's close, a window adjustment), Nagle would hold it until the
    ACK, which the host's loopback delays by up to 40 ms: more than the whole round trip."""
    transport = client.get_transport()
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SSH:
    def __init__(self, client: paramiko.SSHClient | None, log: Path | None,
                 reconnect: Callable[[], SSH] | None = None, limits: GuestLimits | None = None,
                 port: PortServer | None = None):
        self.client = client  # None: connected at the first command the port server cannot take
        self.log = log
        self.limits = limits or guest_limits.load()
        self._reconnect = reconnect  # used once, when the session is found dropped before a command
        self.port = port  # the server on the guest's virtio-serial port, tried first (harness/vm/port.py)
        self._port_lock = threading.Lock()
        self.peer_alive: Callable[[], bool] = lambda: True  # the VM's: no reconnecting to a QEMU that is gone
        # Command servers, one command at a time each: a thread finds one idle, or starts one (up to
        # MAX_SERVERS), or takes an exec channel; it never waits behind another thread's command.
        self._idle: list[CommandServer] = []
        self._servers = 0  # started and not dropped: idle, or busy with a command
        self._pool_lock = threading.Lock()
        self._server_absent = False  # this guest has no command server: every command takes a channel
        self._session_lock = threading.Lock()  # a reconnect replaces self.client
        self._log_lock = threading.Lock()
        if client:
            _no_delay(client)

    @classmethod
    def connect(cls, port: int, host_key_pub: Path, key: Path, timeout: float, log: Path | None = None,
                limits: GuestLimits | None = None, port_server: PortServer | None = None) -> SSH:
        """Retry while the guest's dropbear comes up; a wrong host key is final.

        The boot calls this once /init saw dropbear listening, so the first try normally succeeds; a try
        that fails is retried soon (50 ms, growing slowly): a long first sleep would be most of the wait."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        last: Exception | None = None
        limits = limits or guest_limits.load()
        while True:
            client = pinned_client(port, host_key_pub)
            # An attempt may use all the time left: a slow guest (a debug kernel, a loaded host) can take more
            # than 10 s for the key exchange, and an attempt cut short only starts the exchange over.
            left = max(deadline - time.monotonic(), 1.0)
            try:
                client.connect("127.0.0.1", port, username="root", key_filename=str(key), look_for_keys=False,
                               allow_agent=False, timeout=left, banner_timeout=left, auth_timeout=left)
                transport = client.get_transport()
                assert transport
                transport.set_keepalive(5)
                return cls(client, log, reconnect=lambda: cls.connect(port, host_key_pub, key, 15, log, limits),
                           limits=limits, port=port_server)
            except paramiko.BadHostKeyException as e:
                client.close()
                raise SSHError(f"guest on 127.0.0.1:{port} presented a host key that is not the one pinned in "
                               f"{host_key_pub}: refusing to connect ({e})") from None
            except paramiko.SSHException as e:
                if "not found in known_hosts" in str(e):
                    client.close()
                    raise SSHError(f"guest on 127.0.0.1:{port} presented an unknown host key type: refusing "
                                   f"({e})") from None
                last = e
            except (OSError, EOFError) as e:
                last = e
            client.close()
            if time.monotonic() + delay > deadline:
                raise SSHError(f"no SSH session with 127.0.0.1:{port} within {timeout:.0f} s: {last!r}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def run(self, argv: Sequence[str], timeout: float = 60, stdin: bytes | None = None, check: bool = False,
            own_channel: bool = False) -> CommandResult:
        """Run argv in the guest: on the command server, or (own_channel, or the server busy or absent) on an
        exec channel of its own. Thread-safe."""
        command = shlex.join(argv)
        started = time.monotonic()
        result = None if own_channel else self._run_on_port(argv, command, timeout, stdin, started)
        if result is None:
            transport = self._live_transport(command)
            if not own_channel and not self._server_absent:
                result = self._run_on_server(transport, argv, command, timeout, stdin, started)
            if result is None:
                result = self._run_on_channel(transport, argv, command, timeout, stdin, started)
        self._log(result)
        if check and not result.ok:
            raise CommandFailed(f"guest command failed:\n{result.describe()}")
        return result

    def _live_transport(self, command: str) -> paramiko.Transport:
        with self._session_lock:
            client = self.client
            if client is None:  # a restored guest: its first command the port server could not take
                if not (self._reconnect and self.peer_alive()):
                    raise SSHError(f"no SSH session with the guest; cannot run: {command}")
                self._note(f"connecting (the port server is busy or gone) before: {command}")
                client = self.client = self._reconnect().client
                assert client
            transport = client.get_transport()
            if (transport is None or not transport.is_active()) and self._reconnect:
                # A session that just dropped may be a QEMU on its way out: its sockets close before it is
                # seen dead, and a reconnect in between reaches a port that resets.
                time.sleep(RECONNECT_SETTLE_S)
            if (transport is None or not transport.is_active()) and self._reconnect and self.peer_alive():
                # Reconnect once: the command was not sent yet, so running it now is not running it twice.
                self._note(f"session dropped; reconnecting before: {command}")
                fresh, self._reconnect = self._reconnect(), None
                client.close()
                client = self.client = fresh.client
                assert client
                transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise SSHError(f"SSH session is gone; cannot run: {command}")
            return transport

    def _run_on_server(self, transport: paramiko.Transport, argv: Sequence[str], command: str, timeout: float,
                       stdin: bytes | None, started: float) -> CommandResult | None:
        """The command over a command server; None when none can take it (all busy, none in this guest, an
        argument it cannot carry): nothing was run."""
        try:
            request = encode_request(argv, timeout, stdin or b"")
        except ValueError:
            return None
        server, reserved = self._checkout(transport)
        if server is None and not reserved:
            return None
        deadline = started + timeout
        keep = False
        try:
            if server is None:
                server = self._start_server(transport, command, timeout, deadline)
                if server is None:
                    return None
            reply = self._ask(server, request, command, timeout, deadline)
            keep = True
        except CommandNotStarted:
            keep = True  # the server could not start it, and waits for the next
            raise
        finally:
            self._checkin(server, keep)
        return self._result(argv, reply, timeout, command, started)

    def _run_on_port(self, argv: Sequence[str], command: str, timeout: float, stdin: bytes | None,
                     started: float) -> CommandResult | None:
        """The command over the port server; None when it cannot take it (busy, gone, none, an argument it
        cannot carry): nothing was run. After anything but a clean reply the port is closed for good."""
        port = self.port
        if port is None or not port.usable() or not self._port_lock.acquire(blocking=False):
            return None
        try:
            try:
                request = encode_request(argv, timeout, stdin or b"")
            except ValueError:
                return None
            keep = False
            try:
                reply = self._ask(port, request, command, timeout, started + timeout)
                keep = True
            except (CommandNotStarted, PortServerStartedOver):
                keep = True  # the server that answers next is in step with the port
                raise
            finally:
                if not keep:
                    port.close()
            return self._result(argv, reply, timeout, command, started)
        finally:
            self._port_lock.release()

    def _ask(self, server: CommandServer, request: bytes, command: str, timeout: float, deadline: float) -> Reply:
        """The server's reply to `request`, or the SSHError that says how it failed."""
        try:
            return server.run(request, deadline + SERVER_REPLY_GRACE_S)
        except TimeoutError:
            # No word by the deadline: a guest that no longer runs. The channel is dropped (its server, if it
            # ever reads again, sees the end and kills the command).
            raise CommandTimeout(f"command did not finish within {timeout:.0f} s: {command}") from None
        except ServerStartedOver:
            raise PortServerStartedOver(f"the guest's command server ended (killed in the guest: /init started "
                                        f"another) while running: {command}; the command's outcome is "
                                        "unknown") from None
        except ServerGone:
            words = server.last_words()
            if server.transport is None:
                raise SSHError(f"the guest's command port closed while running: {command}") from None
            if not _still_active(server.transport):
                raise SSHError(f"SSH session dropped while running: {command}") from None
            raise CommandServerLost(f"the guest's command server ended ({words}) while running: {command}; "
                                    "the command's outcome is unknown") from None
        except ServerFailed as e:
            # It could not start the command (and waits for the next): said as the command's failure to start
            raise CommandNotStarted(f"the guest could not start: {command}: {e}") from None
        except Flooded as e:
            raise CommandFlooded(f"the guest flooded: {e} while running: {command}") from None
        except MalformedFrame as e:
            raise CommandServerLost(f"the guest's command server garbled its channel ({e}) while running: "
                                    f"{command}; the command's outcome is unknown") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHError(f"SSH channel failed while running: {command}: {type(e).__name__} {e}") from None

    @staticmethod
    def _result(argv: Sequence[str], reply: Reply, timeout: float, command: str, started: float) -> CommandResult:
        if reply.exit.how == TIMED_OUT:
            raise CommandTimeout(f"command did not finish within {timeout:.0f} s: {command}")
        return CommandResult(tuple(argv), reply.exit.exit_status, reply.stdout.decode(errors="replace"),
                             reply.stderr.decode(errors="replace"), time.monotonic() - started,
                             signal=reply.exit.signal, guest_s=reply.exit.guest_s)

    def _checkout(self, transport: paramiko.Transport) -> tuple[CommandServer | None, bool]:
        """An idle server of this session; else (None, True): a slot reserved to start one; else (None, False)."""
        with self._pool_lock:
            while self._idle:
                server = self._idle.pop()
                if server.transport is transport and server.usable():
                    return server, False
                self._note(f"command server gone ({server.last_words()}); starting another")
                server.close()
                self._servers -= 1
            if self._servers < MAX_SERVERS:
                self._servers += 1
                return None, True
            return None, False

    def _checkin(self, server: CommandServer | None, keep: bool) -> None:
        """Back to the idle ones, or dropped (and its slot freed) after anything but a clean reply."""
        with self._pool_lock:
            if keep and server:
                self._idle.append(server)
                return
            self._servers -= 1
        if server:
            server.close()

    def _start_server(self, transport: paramiko.Transport, command: str, timeout: float, deadline: float
                      ) -> CommandServer | None:
        try:
            return CommandServer.start(transport, deadline, open_timeout=min(timeout, 10), limits=self.limits)
        except TimeoutError:
            raise CommandTimeout(f"command did not finish within {timeout:.0f} s: {command} (the guest's command "
                                 "server did not start)") from None
        except ServerAbsent as e:
            # An image without the server (an older one, a bare one): a channel per command, as before
            self._server_absent = True
            self._note(f"no command server in this guest ({e}); every command takes an SSH channel of its own")
            return None
        except ServerGone as e:
            if not _still_active(transport):
                raise SSHError(f"SSH session dropped while running: {command}") from None
            self._note(f"the command server did not start ({e}); this command takes an SSH channel of its own")
            return None
        except (paramiko.SSHException, EOFError, OSError) as e:
            # "Timeout opening channel": a guest that no longer schedules; EOFError: the peer (QEMU) went away
            raise SSHError(f"cannot open an SSH channel for: {command}: {type(e).__name__} {e}") from None

    def _run_on_channel(self, transport: paramiko.Transport, argv: Sequence[str], command: str, timeout: float,
                        stdin: bytes | None, started: float) -> CommandResult:
        """The command on an exec channel of its own: dropbear's `sh -c`."""
        try:
            chan = transport.open_session(timeout=min(timeout, 10))
        except (paramiko.SSHException, EOFError, OSError) as e:
            # "Timeout opening channel": a guest that no longer schedules; EOFError: the peer (QEMU) went away
            raise SSHError(f"cannot open an SSH channel for: {command}: {type(e).__name__} {e}") from None
        chan.settimeout(timeout)
        try:
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = started + timeout
            while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"command did not finish within {timeout:.0f} s: {command}")
                if chan.recv_ready():
                    take_output(out, chan.recv(65536), self.limits.output_bytes, "stdout", command)
                elif chan.recv_stderr_ready():
                    take_output(err, chan.recv_stderr(65536), self.limits.output_bytes, "stderr", command)
                elif not transport.is_active():
                    raise SSHError(f"SSH session dropped while running: {command}")
                else:
                    time.sleep(0.005)
            status = chan.recv_exit_status()
            if status == -1 and not _still_active(transport):
                # No exit status because the session itself went (QEMU died, the kernel panicked): a lost
                # channel, not a result. (-1 with a live session is a command killed by a signal.)
                raise SSHError(f"SSH session dropped while running: {command}")
        except TimeoutError:
            raise CommandTimeout(f"command did not finish within {timeout:.0f} s: {command}") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHError(f"SSH channel failed while running: {command}: {type(e).__name__} {e}") from None
        finally:
            chan.close()
        return CommandResult(tuple(argv), status, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - started)

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        # Written beside, then renamed over: a file in use (the loader or libc a running dropbear maps)
        # keeps its old inode instead of being truncated under that process.
        self.run(["sh", "-c", 'cat > "$1.part" && chmod "$2" "$1.part" && mv -f "$1.part" "$1"', "put", remote,
                  f"{mode:o}"], stdin=local.read_bytes(), check=True)

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for server in idle:
            server.close()
        if self.port:
            self.port.close()
        if self.client:
            self.client.close()

    def _log(self, result: CommandResult) -> None:
        self._note(result.describe())

    def _note(self, text: str) -> None:
        if self.log:
            with self._log_lock, open(self.log, "a") as f:
                f.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
