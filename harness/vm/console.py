"""The serial console: QEMU under pexpect from its first byte, teed to a log by a reader thread.

The thread drains the pty continuously (a full pty would stall the guest), scans each line for
kernel splats while they print, and lets the caller wait for a pattern, a crash, or QEMU's exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import ptyprocess

from harness.results.splat import Splat, SplatScanner
from harness.vm.timeline import Arrival, Timeline

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

    status: str  # "matched" | "crashed" | "exited" | "timeout" | "silent"
    match: re.Match[str] | None = None
    splat: Splat | None = None
    exit_status: int | None = None
    silent_s: float = 0.0


class Console:
    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 pass_fds: Sequence[int] = ()):
        """pass_fds: descriptors QEMU inherits (the QMP socketpair's end); every other one is closed."""
        if os.environ.get("HARNESS_NO_QEMU"):  # `make unit`: a test that boots here is missing its e2e mark
            raise RuntimeError(f"HARNESS_NO_QEMU is set: refusing to start {argv[0]} (mark the test e2e)")
        self.log_path = log_path
        self._log = open(log_path, "w", errors="replace")  # noqa: SIM115 - closed by the reader thread
        self._text = ""
        self._cond = threading.Condition()
        self._scanner = SplatScanner()
        self._partial = ""
        self.splats: list[Splat] = []  # every splat started so far (fatal or not)
        self.last_output = time.monotonic()
        self.exit_status: int | None = None
        # Arrival times (time.monotonic()) for the boot timeline (harness/vm/timeline.py): taken here, on
        # the host, as each line arrives; `started` just before QEMU is spawned.
        self.kernel_line: Arrival | None = None  # the kernel's first line ("Linux version ...")
        self.markers: list[Arrival] = []  # every "HARNESS-..." line /init printed
        self.exit: Arrival | None = None  # QEMU's end (EOF on the pty)
        self._closed = False
        self.log_error = ""  # why the log on disk stopped short of what QEMU printed (a full disk)
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
        with self._cond:
            return self._text

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
                self._write_log(chunk)
                self._text += chunk
                self.last_output = time.monotonic()
                self._scan(chunk, arrived=self.last_output)
                self._cond.notify_all()
        self.child.close()  # reaps QEMU, so that its exit status is known
        with self._cond:
            self._scan("\n", final=True, arrived=time.monotonic())
            self.exit_status = self.child.exitstatus if self.child.exitstatus is not None else -(
                self.child.signalstatus or 0)
            self._closed = True
            try:
                self._log.close()
            except OSError as e:
                self.log_error = self.log_error or f"console log {self.log_path} is incomplete: {e.strerror}"
            self._cond.notify_all()

    def _write_log(self, chunk: str) -> None:
        """Tee to the log; a full disk stops the log, never the draining (a full pty stalls the guest)."""
        if self.log_error:
            return
        try:
            self._log.write(chunk)
            self._log.flush()
        except OSError as e:
            self.log_error = f"console log {self.log_path} is incomplete: {e.strerror}"

    def _scan(self, chunk: str, arrived: float, final: bool = False) -> None:
        lines = (self._partial + chunk.replace("\r", "")).split("\n")
        self._partial = "" if final else lines.pop()
        for line in lines:
            if line.startswith("HARNESS-"):
                self.markers.append(Arrival(arrived, self.qemu_cpu_s(), line))
            elif self.kernel_line is None and "Linux version" in line:
                self.kernel_line = Arrival(arrived, self.qemu_cpu_s(), line)
            started = self._scanner.feed(line)
            if started is not None:
                self.splats.append(started)

    def timeline(self) -> Timeline:
        """This boot's stages so far, from the arrival times of its console lines."""
        with self._cond:
            return Timeline.from_console(self.started, self.kernel_line, list(self.markers))

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
            return next((s for s in self.splats if s.fatal), None)

    def finished_splats(self) -> list[Splat]:
        """Splats with their whole text, as far as the console has printed them."""
        with self._cond:
            return self._scanner.finish()

    def wait_for(self, pattern: str, timeout: float, since: int = 0, stop_on_crash: bool = True,
                 silence_timeout: float | None = None) -> WaitResult:
        """Wait until `pattern` appears in the console after offset `since`.

        silence_timeout: give up early when the console has printed nothing for that long (a hung boot).
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if m := regex.search(self._text, since):
                    return WaitResult("matched", match=m)
                if stop_on_crash and (splat := next((s for s in self.splats if s.fatal), None)):
                    return WaitResult("crashed", splat=splat)
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
        with self._cond:
            return len(self._text)
