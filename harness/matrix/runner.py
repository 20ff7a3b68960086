"""`harness matrix run`: build each kernel once, then run the cells as parallel `harness run` subprocesses.

Each build and each cell is a `harness --record FILE ...` process: how it ended comes back as that record
(an ExitRecord of harness/results/model.py: exit status, kind of failure, message), never from its output,
which is only kept as a log. A cell whose command failed on the machine (kind "infra": apt, the network, a
missing QEMU, a full disk) is INFRA, and tried once more; bad input is ERROR.

Kernel builds go one after another (each uses every core). Then up to `jobs` cells run at once,
each in its own process group with its own results directory, so that a cell that crashes, hangs
or is killed at its timeout takes nothing else down. A cell that ends INFRA (the guest was never
reachable, or no results at all) runs once more before it is reported; its first attempt is kept
next to it as <cell>.attempt-1.

    results/matrix-<name>/<time>/       run.json, report.html, summary.json, junit.xml
        builds/<kernel>-<notifier>.log  `harness kernel` output, and .exit.json: how it ended
        <cell-id>/                      a `harness run` results directory, plus harness.log, exit.json, cell.json
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harness import paths
from harness.kernel.arch import HOST
from harness.matrix.spec import Cell, Matrix, kernel_id
from harness.results import load, regressions, report
from harness.results.model import EXIT_JSON, Attempt, Build, CellRecord, ExitRecord, FailedBuild, RunRecord
from harness.results.outcome import GREEN, Outcome
from harness.results.rundir import CELL_JSON, RUN_JSON, RunDir, point_latest
from harness.results.summary import format_summary

# A cell command that failed before its verdict, by the kind of failure its record names
FAILED_KINDS = {"user": Outcome.ERROR, "fault": Outcome.ERROR, "infra": Outcome.INFRA}
KILL_GRACE_S = 20.0  # SIGTERM lets `harness run` stop its VMs and write outcomes.json; then SIGKILL
HEARTBEAT_S = 30.0


def store(matrix_name: str) -> Path:
    """Where the runs of one matrix are kept, newest last by name: the history regressions are looked for in."""
    return paths.results_root() / f"matrix-{matrix_name}"


def default_jobs() -> int:
    """One VM per core, and 2 GiB of free memory per VM (1 GiB guest plus QEMU and the harness)."""
    available_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available_kib = int(line.split()[1])
    return max(1, min(os.cpu_count() or 1, available_kib // (2 * 1024 * 1024)))


def _die_with_parent() -> None:
    """In a cell or build child: SIGTERM it when the matrix runner dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str], stdout: IO[str] | int) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, text=True, cwd=paths.REPO,
                            start_new_session=True, preexec_fn=_die_with_parent,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _kernel_key(cell: Cell) -> tuple[str, str, str, str]:
    """What tells one cell's kernel from another's: cells that share it share one build."""
    return cell.kernel, cell.arch, cell.notifier, cell.fragment


def _killpg(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@dataclass
class CellRun:
    cell: Cell
    dir: Path
    attempts: list[Attempt] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log: IO[str] | None = None
    started: float = 0.0
    started_at: str = ""
    killed_at: float | None = None


class Runner:
    def __init__(self, matrix: Matrix, cells: list[Cell], run_dir: Path, jobs: int, out: IO[str] = sys.stdout,
                 harness: Sequence[str] = (sys.executable, "-m", "harness.cli")):
        self.matrix, self.cells, self.run_dir, self.jobs, self.out = matrix, cells, run_dir, max(1, jobs), out
        self.harness = list(harness)  # the command that cells and builds run (tests give a stand-in)
        self.t0 = time.monotonic()
        self.done: list[tuple[CellRun, Outcome]] = []  # (cell run, final outcome)

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.t0)
        print(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}", file=self.out, flush=True)

    # -- kernels -------------------------------------------------------------------------------------

    def build_kernels(self) -> dict[tuple[str, str, str, str], Build]:
        kernels: dict[tuple[str, str, str, str], Cell] = {}
        for c in self.cells:
            kernels.setdefault(_kernel_key(c), c)  # each kernel's first cell stands for it
        builds = {}
        for n, (key, cell) in enumerate(kernels.items(), 1):
            what = (f"{cell.kernel}{'' if cell.arch == HOST else f' ({cell.arch})'} notifier {cell.notifier}"
                    + (f" + {cell.fragment}" if cell.fragment else ""))
            self.say(f"kernel {n}/{len(kernels)}: {what}")
            b = builds[key] = self.build_one(cell)
            self.say(f"kernel {what}: {'ready' if b.ok else 'FAILED'} in {b.seconds:.0f} s"
                     + ("" if b.ok else f"\n{b.error}"))
        return builds

    def build_one(self, cell: Cell) -> Build:
        kernel, notifier, fragment, arch = cell.kernel, cell.notifier, cell.fragment, cell.arch
        rel = (f"builds/{kernel_id(kernel)}{'' if arch == HOST else '-' + arch}-{notifier}"
               f"{'-' + Path(fragment).stem if fragment else ''}.log")
        log_path = self.run_dir / rel
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        record_path = log_path.with_suffix(".exit.json")
        record_path.unlink(missing_ok=True)
        proc = _spawn([*self.harness, "--record", str(record_path), "kernel", *cell.kernel_args()],
                      subprocess.PIPE)
        timer = threading.Timer(self.matrix.build_timeout_s, _killpg, (proc, signal.SIGKILL))
        timer.start()
        lines = []
        try:
            assert proc.stdout
            with open(log_path, "w") as log:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line)
                    if line.strip() and line.lstrip()[:1] not in '{}"':  # progress, not the final JSON
                        print(f"    {line.rstrip()}", file=self.out, flush=True)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted: the build is in its own session, so stop it here
                _killpg(proc, signal.SIGTERM)
        seconds = round(time.monotonic() - started, 1)
        if rc == 0:
            return Build(kernel, notifier, True, seconds, rel, fragment=fragment, arch=arch)
        record = ExitRecord.read(record_path)
        # the failure as the build said it; with no record (it was killed, or crashed), its last lines
        error = record.message if record and record.kind else "".join(lines[-30:])
        if rc < 0 and seconds >= self.matrix.build_timeout_s:
            error = f"the build exceeded its {self.matrix.build_timeout_s:g} s build_timeout and was killed"
        return Build(kernel, notifier, False, seconds, rel, error.strip() or f"exit status {rc}", fragment, arch)

    # -- cells ---------------------------------------------------------------------------------------

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.say(f"matrix {self.matrix.name}: {len(self.cells)} cells, up to {self.jobs} at once; results in "
                 f"{self.run_dir}")
        self._run_record(started_at, {}, None).write(self.run_dir / RUN_JSON)
        interrupted = False
        builds: dict[tuple[str, str, str, str], Build] = {}
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            builds = self.build_kernels()
            queue: deque[CellRun] = deque()
            for cell in self.cells:
                b = builds[_kernel_key(cell)]
                cr = CellRun(cell, self.run_dir / cell.id)
                if b.ok:
                    queue.append(cr)
                else:
                    self.record_build_failure(cr, b)
            self.run_cells(queue)
        except KeyboardInterrupt:
            interrupted = True
            self.say("interrupted: stopping the running cells")
        finally:
            signal.signal(signal.SIGTERM, previous)
        meta = self._run_record(started_at, builds, time.monotonic() - self.t0, interrupted)
        meta.write(self.run_dir / RUN_JSON)
        if interrupted:  # report what finished, but never make this run the one others compare with
            if any(self.run_dir.glob(f"*/{CELL_JSON}")):
                print(format_summary(report.write_report(self.run_dir)), file=self.out, flush=True)
            return 130
        return self.finish()

    def _run_record(self, started_at: str, builds: dict[tuple[str, str, str, str], Build], duration: float | None,
                    interrupted: bool = False) -> RunRecord:
        return RunRecord(self.matrix.name, str(self.matrix.path), started_at,
                         time.strftime("%Y-%m-%dT%H:%M:%S%z") if duration is not None else None,
                         round(duration, 1) if duration is not None else None, self.jobs,
                         [c.id for c in self.cells], list(builds.values()), interrupted)

    def run_cells(self, queue: deque[CellRun]) -> None:
        running: list[CellRun] = []
        total, last_beat = len(self.cells), time.monotonic()
        try:
            while queue or running:
                while queue and len(running) < self.jobs:
                    cr = queue.popleft()
                    self.start(cr)
                    running.append(cr)
                    self.progress(running, queue, total)
                time.sleep(0.5)
                for cr in list(running):
                    if self.poll(cr):
                        running.remove(cr)
                        if self.judge(cr):
                            queue.append(cr)  # INFRA on its first attempt: once more, at the back
                        self.progress(running, queue, total)
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    last_beat = time.monotonic()
                    self.progress(running, queue, total)
        except KeyboardInterrupt:
            for cr in running:
                if cr.proc:
                    _killpg(cr.proc, signal.SIGTERM)
            for cr in running:
                if cr.proc:
                    try:
                        cr.proc.wait(timeout=KILL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        _killpg(cr.proc, signal.SIGKILL)
                        cr.proc.wait()
                    self.conclude(cr, Outcome.ERROR, "interrupted: the matrix run was stopped", cr.proc.returncode)
            raise

    def start(self, cr: CellRun) -> None:
        if cr.dir.exists():  # a cell run again into the same run directory replaces its old results
            shutil.rmtree(cr.dir)
        cr.dir.mkdir(parents=True)
        args = cr.cell.run_args()
        args[1:1] = ["--results-dir", str(cr.dir)]
        cr.log = open(RunDir(cr.dir).harness_log, "w")  # noqa: SIM115 -- closed in poll() when the cell ends
        cr.started, cr.started_at, cr.killed_at = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), None
        cr.proc = _spawn([*self.harness, "--record", str(cr.dir / EXIT_JSON), *args], cr.log)
        attempt = f" (attempt {len(cr.attempts) + 1})" if cr.attempts else ""
        self.say(f"start {cr.cell.id}{attempt}")

    def poll(self, cr: CellRun) -> bool:
        """True once the cell's process has exited; enforces the cell's timeout on the way."""
        assert cr.proc
        if cr.proc.poll() is not None:
            assert cr.log
            cr.log.close()
            return True
        now = time.monotonic()
        if cr.killed_at is None and now - cr.started > cr.cell.timeout_s:
            cr.killed_at = now
            self.say(f"timeout {cr.cell.id}: {cr.cell.timeout_s:g} s passed; stopping it")
            _killpg(cr.proc, signal.SIGTERM)
        elif cr.killed_at is not None and now - cr.killed_at > KILL_GRACE_S:
            _killpg(cr.proc, signal.SIGKILL)
        return False

    def judge(self, cr: CellRun) -> bool:
        """Classify the attempt that just ended; True when it should run once more (INFRA, first time)."""
        assert cr.proc
        rc = cr.proc.returncode
        record = ExitRecord.read(cr.dir / EXIT_JSON)
        if cr.killed_at is not None:
            outcome, reason = Outcome.TIMEOUT, f"the cell exceeded its {cr.cell.timeout_s:g} s timeout and was killed"
        elif record and record.kind in FAILED_KINDS:  # it never reached a verdict: its record says why
            outcome, reason = FAILED_KINDS[record.kind], record.message
        else:
            outcome, reason = load.judge_cell_dir(cr.dir, rc)
        if outcome == Outcome.INFRA and not cr.attempts:
            kept = cr.dir.with_name(f"{cr.cell.id}.attempt-1")
            shutil.rmtree(kept, ignore_errors=True)
            cr.dir.rename(kept)
            cr.attempts.append(self._attempt(cr, outcome, reason, rc, kept.name))
            self.say(f"INFRA {cr.cell.id}: {reason}; retrying once")
            return True
        self.conclude(cr, outcome, reason, rc)
        return False

    def _attempt(self, cr: CellRun, outcome: Outcome, reason: str, rc: int | None, dirname: str) -> Attempt:
        return Attempt(outcome, reason, rc, cr.started_at, round(time.monotonic() - cr.started, 1), dirname)

    def conclude(self, cr: CellRun, outcome: Outcome, reason: str, rc: int | None) -> None:
        cr.attempts.append(self._attempt(cr, outcome, reason, rc, cr.dir.name))
        self.write_cell(cr, outcome, reason)
        line = f"{outcome.value:<7} {cr.cell.id} ({cr.attempts[-1].duration_s:.0f} s)"
        if outcome not in GREEN:
            line += f": {reason}\n          reproduce: {cr.cell.reproducer()}"
        self.say(line)

    def record_build_failure(self, cr: CellRun, build: Build) -> None:
        cr.dir.mkdir(parents=True, exist_ok=True)
        (cr.dir / "build-error.txt").write_text(build.error + "\n")
        first = build.error.removeprefix("harness: ").splitlines()[0] if build.error else ""
        cr.attempts.append(Attempt(Outcome.ERROR, f"kernel build failed: {first}", dir=cr.dir.name))
        self.write_cell(cr, Outcome.ERROR, f"kernel build failed: {first}", build)
        self.say(f"ERROR   {cr.cell.id}: kernel build failed\n          reproduce: {cr.cell.build_reproducer()}")

    def write_cell(self, cr: CellRun, outcome: Outcome, reason: str, failed_build: Build | None = None) -> None:
        build = None if failed_build is None else FailedBuild(f"../{failed_build.log}", cr.cell.build_reproducer(),
                                                              failed_build.error)
        CellRecord(cr.cell, outcome, reason, cr.cell.reproducer(), cr.attempts, cr.attempts[-1].duration_s, build,
                   self.matrix.name).write(RunDir(cr.dir).cell_json)
        self.done.append((cr, outcome))

    def progress(self, running: list[CellRun], queue: deque[CellRun], total: int) -> None:
        outcomes = [outcome for _, outcome in self.done]
        green = sum(1 for o in outcomes if o in GREEN)
        infra, flaky = outcomes.count(Outcome.INFRA), outcomes.count(Outcome.FLAKY)
        failed = len(outcomes) - green - infra - flaky
        now = time.monotonic()
        names = ", ".join(f"{cr.cell.id} {now - cr.started:.0f}s" for cr in running) or "-"
        self.say(f"{len(self.done)}/{total} done ({green} green, {failed} failed, {flaky} flaky, {infra} infra); "
                 f"running: {names}; {len(queue)} queued")

    # -- the end -------------------------------------------------------------------------------------

    def finish(self) -> int:
        summary = report.write_report(self.run_dir)
        if self.run_dir.parent == store(self.matrix.name):
            prev = load.previous_run(self.run_dir)
            point_latest(self.run_dir.parent / "latest", self.run_dir.name)
            if prev:
                found = regressions.find_regressions(load.load_run(prev), load.load_run(self.run_dir))
                report.write_report(self.run_dir, found)
                print(regressions.format_regressions(found), file=self.out)
        print(format_summary(summary), file=self.out, flush=True)
        # A FLAKY cell (a test that failed, then passed on a fresh guest) is reported on its own, not a failure
        bad = [c for c in summary["cells"] if Outcome(c["outcome"]) not in GREEN | {Outcome.FLAKY}]
        return 1 if bad else 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
