"""What a process exposes to other local users, checked as an attacker would (tests/test_exposure*.py).

Read from /proc like any user can: a process's sockets are the `socket:[INODE]` links in /proc/PID/fd,
matched against /proc/net/unix (named and abstract unix sockets) and /proc/net/tcp, tcp6 (listeners).
Then a process running as `nobody` (uid and gid 65534, no supplementary groups) tries to connect
to each unix socket that has a name: a socket it reaches is a door left open.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
TCP_LISTEN = "0A"
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net/tcp{,6} print them


@dataclass(frozen=True)
class UnixSocket:
    inode: int
    name: str  # "@abstract", "/a/path", or "" (unnamed: a socketpair's end, an accepted connection)
    listening: bool


@dataclass(frozen=True)
class TcpListener:
    inode: int
    address: str  # as /proc/net/tcp prints it: hex, network byte order per 32-bit word
    port: int

    @property
    def loopback(self) -> bool:
        return self.address in LOOPBACK


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def unix_sockets(pid: int) -> list[UnixSocket]:
    """Every unix socket the process holds: Num RefCount Protocol Flags Type St Inode [Path]."""
    mine = socket_inodes(pid)
    found = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split(None, 7)
        inode = int(fields[6])
        if inode in mine:
            flags = int(fields[3], 16)
            found.append(UnixSocket(inode, fields[7] if len(fields) > 7 else "", bool(flags & 0x10000)))
    return found


def tcp_listeners(pid: int) -> list[TcpListener]:
    mine = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == TCP_LISTEN and int(fields[9]) in mine:
                found.append(TcpListener(int(fields[9]), address, int(port, 16)))
    return found


# Run as nobody: for each name (hex, so that an abstract name's leading NUL survives argv), try to connect.
_ATTACKER = """
import json, socket, sys
out = {}
for hexname in sys.argv[1:]:
    name = bytes.fromhex(hexname).decode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(name)
        out[hexname] = "connected"
    except OSError as e:
        out[hexname] = "refused: " + (e.strerror or type(e).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""


def connect_as_nobody(names: list[str]) -> dict[str, str]:
    """{name: "connected" | "refused: ..."} for each unix socket name, tried by uid/gid 65534."""
    if not names:
        return {}
    # /proc/net/unix shows an abstract name with '@' for its leading NUL
    raw = {("\0" + n[1:] if n.startswith("@") else n): n for n in names}
    # The system's python: nobody may not be able to reach a virtualenv's interpreter (under /root, say).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    result = subprocess.run([python, "-I", "-c", _ATTACKER, *(r.encode().hex() for r in raw)],
                            user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True,
                            timeout=30, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"attacker process failed: {result.stderr}")
    answers = json.loads(result.stdout)
    return {raw[bytes.fromhex(h).decode()]: a for h, a in answers.items()}


def open_doors(pid: int) -> list[str]:
    """Everything about `pid` another local user could use: each finding a line, none when closed."""
    doors = []
    named = [s.name for s in unix_sockets(pid) if s.name]
    for name, answer in connect_as_nobody(named).items():
        if answer == "connected":
            doors.append(f"unix socket {name}: uid {NOBODY} connected")
    for listener in tcp_listeners(pid):
        if not listener.loopback:
            doors.append(f"TCP listener on {listener.address}:{listener.port} is not on loopback")
    for fd in (0, 1, 2):  # the serial console: a pty another user could write fake console lines into
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/pts/") and st.st_mode & 0o077:
            doors.append(f"fd {fd} ({os.readlink(f'/proc/{pid}/fd/{fd}')}) has mode {stat.S_IMODE(st.st_mode):o}: "
                         "others may open it")
    return doors


def is_root() -> bool:
    return os.geteuid() == 0


def abstract_listener(name: str) -> socket.socket:
    """A listening abstract socket, as QMP had before issue 18: the check must flag it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(1)
    return s
