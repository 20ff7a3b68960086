"""The command channel: paramiko to the guest's dropbear, with its host key pinned.

Commands are argument lists, quoted here with shlex.join: no shell string is ever built from input.
Files are copied by streaming them into `cat` (dropbear has no SFTP server in the image).
"""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko


class SSHError(Exception):
    pass


class CommandTimeout(SSHError):
    pass


class CommandFailed(SSHError):
    """A command that ran and exited non-zero (check=True): a result, not a lost channel."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        return (f"$ {shlex.join(self.argv)}\nexit status {self.exit_status} after {self.duration_s:.2f} s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


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


class SSH:
    def __init__(self, client: paramiko.SSHClient, log: Path | None, reconnect: Callable[[], SSH] | None = None):
        self.client = client
        self.log = log
        self._reconnect = reconnect  # used once, when the session is found dropped before a command
        self.peer_alive: Callable[[], bool] = lambda: True  # the VM's: no reconnecting to a QEMU that is gone

    @classmethod
    def connect(cls, port: int, host_key_pub: Path, key: Path, timeout: float, log: Path | None = None) -> SSH:
        """Retry while the guest's dropbear comes up; a wrong host key is final.

        The boot calls this once /init saw dropbear listening, so the first try normally succeeds; a try
        that fails is retried soon (50 ms, growing slowly): a long first sleep would be most of the wait."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        last: Exception | None = None
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
                return cls(client, log, reconnect=lambda: cls.connect(port, host_key_pub, key, 15, log))
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

    def run(self, argv: Sequence[str], timeout: float = 60, stdin: bytes | None = None, check: bool = False
            ) -> CommandResult:
        command = shlex.join(argv)
        started = time.monotonic()
        transport = self.client.get_transport()
        if (transport is None or not transport.is_active()) and self._reconnect and self.peer_alive():
            # Reconnect once: the command was not sent yet, so running it now is not running it twice.
            self._note(f"session dropped; reconnecting before: {command}")
            fresh, self._reconnect = self._reconnect(), None
            self.client.close()
            self.client = fresh.client
            transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"SSH session is gone; cannot run: {command}")
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
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
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
        result = CommandResult(tuple(argv), status, out.decode(errors="replace"), err.decode(errors="replace"),
                               time.monotonic() - started)
        self._log(result)
        if check and not result.ok:
            raise CommandFailed(f"guest command failed:\n{result.describe()}")
        return result

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        # Written beside, then renamed over: a file in use (the loader or libc a running dropbear maps)
        # keeps its old inode instead of being truncated under that process.
        self.run(["sh", "-c", 'cat > "$1.part" && chmod "$2" "$1.part" && mv -f "$1.part" "$1"', "put", remote,
                  f"{mode:o}"], stdin=local.read_bytes(), check=True)

    def close(self) -> None:
        self.client.close()

    def _log(self, result: CommandResult) -> None:
        self._note(result.describe())

    def _note(self, text: str) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
