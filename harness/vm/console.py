"""The serial console: QEMU under pexpect from its first byte, teed to a log by a reader thread.

The thread drains the pty continuously (a full pty would stall the guest), scans each line for
kernel splats while they print (harness/vm/transcript.py), and lets the caller wait for a pattern, a
crash, or QEMU's exit. What the guest prints is untrusted: the memory kept is bounded and the log on disk
stops at its limit (harness/vm/limits.py); past that the console is still drained and scanned, and
`flooded` says why the guest's work ends as FLOOD (harness/vm/faults.py).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import ptyprocess

from harness.results.splat import Splat
from harness.vm import limits as guest_limits
from harness.vm.limits import GuestLimits
from harness.vm.timeline import Arrival, Timeline
from harness.vm.transcript import Transcript, Watch

_LIVE: set[Console] = set()  # every QEMU not yet killed, for the exit handlers below
_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of utime and stime in /proc/PID/stat


def _die_with_parent() -> None:
    """In the QEMU child: the kernel SIGKILLs it when the harness dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Spawn(pexpect.spawn):
    """pexpect.spawn that lets the child keep some file descriptors (ptyprocess closes all the others)."""

    def __init__(self, *args: Any, pass_fds: Sequence[int] = (), **kwargs: Any):
        self._pass_fds = tuple(pass_fds)
        super().__init__(*args, **kwargs)

    def _spawnpty(self, args: list[str], **kwargs: Any) -> ptyprocess.PtyProcess:
        # pexpect's own _spawnpty, plus pass_fds
        return ptyprocess.PtyProcess.spawn(args, pass_fds=self._pass_fds, **kwargs)


def kill_all() -> None:
    for console in list(_LIVE):
        console.kill()


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM stops every VM at once, then unwinds like Ctrl-C (pytest still runs its teardowns)."""
    kill_all()
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(kill_all)
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)


@dataclass(frozen=True)
class WaitResult:
    """What ended a wait: the pattern matched, a fatal splat, QEMU exited, or the deadline passed."""

    status: str  # "matched" | "crashed" | "flooded" | "exited" | "timeout" | "silent"
    match: re.Match[str] | None = None
    splat: Splat | None = None
    exit_status: int | None = None
    silent_s: float = 0.0


class ConsoleLog:
    """console.log on disk, up to `limit` bytes; a full disk or a flood stops the log, never the draining (a
    full pty stalls the guest). Past the limit it ends with a line that says so, and `flooded` says why."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.written = 0
        self.error = ""  # why the log stopped short: a full disk
        self.flooded = ""  # why the log stopped short: the guest printed past the limit
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, chunk: str) -> None:
        if self.error or self.flooded:
            return
        data = chunk.encode("utf-8", "replace")
        room = self.limit - self.written
        try:
            self._file.write(data[:room])
            self.written += min(len(data), room)
            if len(data) > room:
                self.flooded = (f"the guest flooded the console: it printed more than "
                                f"{guest_limits.size(self.limit)} (the log stops there; "
                                f"{guest_limits.ENV_PREFIX}CONSOLE_LOG_BYTES raises the limit)")
                self._file.write(f"\n[harness: {self.flooded}]\n".encode())
            self._file.flush()
        except OSError as e:
            self.error = f"console log {self.path} is incomplete: {e.strerror}"

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            self.error = self.error or f"console log {self.path} is incomplete: {e.strerror}"


class Console:
    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 pass_fds: Sequence[int] = (), limits: GuestLimits | None = None):
        """pass_fds: descriptors QEMU inherits (the QMP socketpair's end); every other one is closed."""
        if os.environ.get("HARNESS_NO_QEMU"):  # `make unit`: a test that boots here is missing its e2e mark
            raise RuntimeError(f"HARNESS_NO_QEMU is set: refusing to start {argv[0]} (mark the test e2e)")
        self.limits = limits or guest_limits.load()
        self.log_path = log_path
        self._log = ConsoleLog(log_path, self.limits.console_log_bytes)
        self._cond = threading.Condition()
        # Arrival times (time.monotonic()) for the boot timeline (harness/vm/timeline.py) are taken by the
        # transcript, on the host, as each line arrives; `started` just before QEMU is spawned.
        self._transcript = Transcript(self.limits.console_memory_bytes, self.qemu_cpu_s)
        self.last_output = time.monotonic()
        self.exit_status: int | None = None
        self.exit: Arrival | None = None  # QEMU's end (EOF on the pty)
        self._closed = False
        # Called once, from the reader thread, when the kernel's first fatal splat starts (a vmcore's dump)
        self.on_fatal: Callable[[], None] | None = None
        self._fatal_told = False
        def preexec() -> None:
            _die_with_parent()
            # The serial console's pty: devpts makes it group tty writable, and a line written there would
            # read as the guest's (a fake ready marker or panic). Only the harness's user may open it.
            os.fchmod(0, 0o600)
            for fd in pass_fds:  # close-on-exec in the harness (no other child gets it), kept across this exec
                os.set_inheritable(fd, True)

        self.started = time.monotonic()
        self.child = _Spawn(argv[0], list(argv[1:]), env=env, encoding="utf-8", codec_errors="replace",
                            timeout=None, echo=False, maxread=65536, preexec_fn=preexec, pass_fds=pass_fds)
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._read, name=f"console:{log_path.name}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        assert self.child.pid is not None  # pexpect.spawn forked it in __init__
        return self.child.pid

    @property
    def text(self) -> str:
        """The console's last lines (limits.console_memory_bytes of them); console.log has the rest."""
        with self._cond:
            return self._transcript.text()

    @property
    def splats(self) -> list[Splat]:
        """Every splat started so far, fatal or not (up to transcript.MAX_SPLATS)."""
        with self._cond:
            return list(self._transcript.splats)

    @property
    def kernel_line(self) -> Arrival | None:
        """The kernel's first line ("Linux version ...") as it arrived."""
        return self._transcript.kernel_line

    @property
    def markers(self) -> list[Arrival]:
        """The "HARNESS-..." lines /init printed, as they arrived."""
        with self._cond:
            return list(self._transcript.markers)

    def _read(self) -> None:
        while True:
            try:
                chunk = self.child.read_nonblocking(65536, timeout=0.5)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError):
                self.exit = Arrival(time.monotonic(), self.qemu_cpu_s(), "")  # before the reaping ends /proc/PID
                break
            with self._cond:
                self._log.write(chunk)
                self.last_output = time.monotonic()
                self._transcript.feed(chunk, arrived=self.last_output)
                self._cond.notify_all()
                crashed = self.on_fatal if self._transcript.fatal and not self._fatal_told else None
                self._fatal_told = self._fatal_told or crashed is not None
            if crashed:
                crashed()  # once, outside the lock: it starts what must happen while the guest is still there
        self.child.close()  # reaps QEMU, so that its exit status is known
        with self._cond:
            self._transcript.finish(arrived=time.monotonic())
            self.exit_status = self.child.exitstatus if self.child.exitstatus is not None else -(
                self.child.signalstatus or 0)
            self._closed = True
            self._log.close()
            self._cond.notify_all()

    @property
    def log_error(self) -> str:
        """Why the log on disk stopped short of what QEMU printed (a full disk); "" while it is whole."""
        return self._log.error

    @property
    def flooded(self) -> str:
        """Why the guest's work ends as FLOOD (it printed past the log's limit); "" while it has not."""
        return self._log.flooded

    def timeline(self) -> Timeline:
        """This boot's stages so far, from the arrival times of its console lines."""
        with self._cond:
            return Timeline.from_console(self.started, self._transcript.kernel_line, list(self._transcript.markers))

    def qemu_cpu_s(self) -> float | None:
        """CPU seconds QEMU has used so far (user + system, every thread): the work a boot took, which a
        loaded host stretches far less than it stretches the wall clock. None once QEMU is reaped."""
        try:
            with open(f"/proc/{self.child.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def fatal_splat(self) -> Splat | None:
        with self._cond:
            return self._transcript.fatal

    def finished_splats(self) -> list[Splat]:
        """Splats with their whole text, as far as the console has printed them."""
        with self._cond:
            return self._transcript.finished_splats()

    def wait_for(self, pattern: str, timeout: float, since: int = 0, stop_on_crash: bool = True,
                 silence_timeout: float | None = None) -> WaitResult:
        """Wait until `pattern` matches a console line that starts at or after offset `since` (a pattern
        matches within one line: harness/vm/transcript.py). A flood ends the wait ("flooded"), as a fatal
        splat does when stop_on_crash.

        silence_timeout: give up early when the console has printed nothing for that long (a hung boot).
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            watch = self._transcript.watch(regex, since)
            try:
                return self._wait(watch, deadline, stop_on_crash, silence_timeout)
            finally:
                self._transcript.unwatch(watch)

    def _wait(self, watch: Watch, deadline: float, stop_on_crash: bool, silence_timeout: float | None
              ) -> WaitResult:
        """wait_for()'s loop, with the condition held."""
        while True:
            if m := watch.match:
                return WaitResult("matched", match=m)
            if stop_on_crash and (splat := self._transcript.fatal):
                return WaitResult("crashed", splat=splat)
            if self.flooded:
                return WaitResult("flooded")
            if self._closed:
                return WaitResult("exited", exit_status=self.exit_status)
            now = time.monotonic()
            if silence_timeout is not None and now - self.last_output > silence_timeout:
                return WaitResult("silent", silent_s=silence_timeout)
            remaining = deadline - now
            if remaining <= 0:
                return WaitResult("timeout")
            self._cond.wait(min(remaining, 1.0))

    def wait_exit(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)

    def kill(self) -> None:
        """Stop QEMU for good; idempotent. The reader thread closes the log when the pty ends."""
        if self.child.isalive():
            self.child.kill(signal.SIGTERM)
            if not self.wait_exit(5):
                self.child.kill(signal.SIGKILL)
        self.wait_exit(10)
        self._thread.join(timeout=5)
        _LIVE.discard(self)

    def offset(self) -> int:
        """Characters the console has printed so far: a `since` for wait_for()."""
        with self._cond:
            return self._transcript.size
