"""Write-then-rename helpers: an interrupted run never leaves a partial artifact under its final name."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from harness.errors import UserError


class OutputDirError(UserError):
    """Where results are to go cannot take them: not a directory, read-only, or (nearly) full."""


MIN_FREE_MIB = 20  # a run writes console logs, dmesg, the .config and its reports: a few MiB at most


def check_output_dir(path: Path, min_free_mib: int = MIN_FREE_MIB) -> None:
    """Before anything is built or booted: can `path` (or the directory it would be made in) take a run?

    Creates nothing: the nearest existing ancestor must be a writable directory with room to spare.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"results directory {path} cannot be made: {existing} is not a directory")
    st = os.statvfs(existing)
    if st.f_flag & os.ST_RDONLY:
        raise OutputDirError(f"results directory {path} is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"results directory {path} is not writable ({existing}: permission denied)")
    free_mib = st.f_bavail * st.f_frsize / 2**20
    if free_mib < min_free_mib:
        raise OutputDirError(f"results directory {path} has {free_mib:.1f} MiB free; a run needs at least "
                             f"{min_free_mib} MiB (disk full?)")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory next to `final`; it becomes `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
