"""The cache's locks: flock on a file under <cache>/locks/, shared or exclusive; a wait longer than a second says
who holds the lock (pid, command, what it is doing, the last line of its log), and says it again while it waits.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from harness.atomic import write_text

NOTICE_AFTER_S = 1.0  # a wait longer than this says who holds the lock
PROGRESS_EVERY_S = 30.0  # and then says it again, with the holder's progress, this often


@contextmanager
def locked(lock_file: Path, what: str = "", log: Path | None = None, shared: bool = False,
           notice_after: float = NOTICE_AFTER_S, progress_every: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """Hold a flock (exclusive, or shared by readers): parallel runs (matrix cells, CI jobs, other
    users of the cache) share one cache safely.

    `what` says what the holder is doing ("building kernel 6.12.117 ..."), `log` where its progress
    shows. Both go to a holder file next to the lock, written once the lock is held, so that a process
    that has to wait can say, on stderr, who it waits for and since when, instead of waiting in silence.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        _acquire(f, lock_file, what, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, notice_after, progress_every)
        record = _holder_file(lock_file, os.getpid())
        try:
            write_text(record, json.dumps({
                "pid": os.getpid(), "command": _cmdline(os.getpid()), "what": what, "log": str(log or ""),
                "since": time.time(), "shared": shared,
            }) + "\n")
            yield
        finally:
            record.unlink(missing_ok=True)  # before the lock goes: a holder file never outlives its holding
            fcntl.flock(f, fcntl.LOCK_UN)


def _acquire(f: IO[str], lock_file: Path, what: str, mode: int, notice_after: float, progress_every: float) -> None:
    started = time.monotonic()
    told_at: float | None = None
    wanted = f" ({what})" if what else ""
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        now = time.monotonic()
        if told_at is None and now - started >= notice_after:
            told_at = now
            _say(f"waiting for {lock_file.name}{wanted}, held by {describe_holders(f, lock_file)}")
        elif told_at is not None and now - told_at >= progress_every:
            told_at = now
            _say(f"still waiting for {lock_file.name} after {now - started:.0f} s, held by "
                 f"{describe_holders(f, lock_file)}")
        time.sleep(0.1)
    if told_at is not None:
        _say(f"got {lock_file.name} after {time.monotonic() - started:.0f} s")


def _say(text: str) -> None:
    print(f"harness: {text}", file=sys.stderr, flush=True)


def _holder_file(lock_file: Path, pid: int) -> Path:
    return lock_file.with_name(f"{lock_file.name}.holder-{pid}")


def lock_holders(f: IO[str]) -> list[int]:
    """The pids holding a flock on f's file, from /proc/locks (the kernel's word, unlike a holder file)."""
    st = os.fstat(f.fileno())
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:  # "->" lines are waiters
            pids.append(int(fields[4]))
    return pids


def describe_holders(f: IO[str], lock_file: Path) -> str:
    """"pid 1234 (harness run ...), building kernel ..., since 08:31:02 (5 min ago); log: ... (last: ...)"."""
    descriptions = []
    for pid in lock_holders(f) or [0]:
        try:
            record = json.loads(_holder_file(lock_file, pid).read_text()) if pid else {}
        except (OSError, ValueError):
            record = {}
        command = (record.get("command") or _cmdline(pid)) if pid else ""
        text = f"pid {pid} ({command})" if pid else "another process (not visible from here)"
        if record:
            ago = time.time() - record["since"]
            text += (f", {record['what'] or 'no description'}, since "
                     f"{time.strftime('%H:%M:%S', time.localtime(record['since']))} ({_duration(ago)} ago)")
            if record.get("log"):
                text += f"; log: {record['log']}{_last_line(Path(record['log']))}"
        elif pid:
            text += ", which left no holder record (an older harness?)"
        descriptions.append(text)
    return "; ".join(descriptions)


def _cmdline(pid: int) -> str:
    """A process's command line on one line, cut short: it goes into one-line messages."""
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _last_line(log: Path) -> str:
    """The last line of a (build) log, read from its end: that is the holder's progress."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f" (last: {lines[-1].strip()[:120]})" if lines else ""
