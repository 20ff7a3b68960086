"""A run directory read as a report reads it: its cells, each cell's tests, and how each ended.

A run directory is either a matrix run (one <cell-id>/ per cell, each with cell.json, written by
harness/matrix/runner.py) or a plain `harness run` directory, read as one cell. Everything here reads
files only, through the results model (model.py, rundir.py, junit.py) that wrote them, so a report
can be rebuilt anywhere from the directories that CI jobs uploaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths, schema
from harness.errors import UserError
from harness.results import junit
from harness.results.cell import Cell
from harness.results.model import (
    Attempt,
    CellRecord,
    FailedBuild,
    JSONObject,
    Result,
    RunRecord,
    Timings,
    read_json,
    read_results,
)
from harness.results.outcome import GREEN, SEVERITY, Outcome, worst
from harness.results.rundir import CELL_JSON, RUN_JSON, RunDir, run_order
from harness.results.schema import CellJSON, EntryJSON

CELL_ENTRY = "(cell)"  # stands for a cell that failed without a failing test: build, timeout, no results


class ReportError(UserError):
    pass


@dataclass
class Entry:
    """What a cell is judged by: one of its tests, or the (cell) entry of a cell that failed without one."""

    name: str  # the test's node id, its file spelled as the cell's suite
    outcome: Outcome
    reason: str
    duration_s: float
    console_log: str | None  # paths relative to the run directory, when the file is there
    dmesg: str | None = None
    registers: str | None = None  # a timeout's CPU registers, kept over QMP before QEMU was stopped
    events: dict[str, int] | None = None  # notifier events the test saw, by event
    reproducer: str = ""

    def to_json(self) -> EntryJSON:
        return {"name": self.name, "outcome": self.outcome.value, "reason": self.reason,
                "duration_s": self.duration_s, "console_log": self.console_log, "dmesg": self.dmesg,
                "registers": self.registers, "events": self.events, "reproducer": self.reproducer}


@dataclass
class CellReport:
    cell: Cell
    outcome: Outcome
    reason: str
    duration_s: float | None
    attempts: list[Attempt]
    command: str  # how the cell ran
    reproducer: str  # how to reproduce its failure: the cell's command, or its kernel build's
    dir: str  # relative to the run directory: "." for a plain run
    log: str | None  # its harness.log
    console_logs: list[str]
    release: str | None
    boot_s: list[float | None]
    prepare: dict[str, float]
    build: FailedBuild | None
    tests: list[Entry] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def tests_time_s(self) -> float:
        return round(sum(t.duration_s for t in self.tests), 3)

    @property
    def first_boot_s(self) -> float | None:
        return self.boot_s[0] if self.boot_s else None

    def to_json(self) -> CellJSON:
        c = self.cell
        return {"id": self.id, "kernel": c.kernel, "notifier": c.notifier, "fragment": c.fragment,
                "machine": c.machine, "suite": c.suite, "outcome": self.outcome.value, "reason": self.reason,
                "infra": self.outcome == Outcome.INFRA, "duration_s": self.duration_s,
                "attempts": [a.to_json() for a in self.attempts], "command": self.command,
                "reproducer": self.reproducer, "dir": self.dir, "log": self.log, "console_logs": self.console_logs,
                "release": self.release, "boot_s": self.boot_s, "prepare": self.prepare,
                "tests_time_s": self.tests_time_s, "build": self.build.to_json() if self.build else None,
                "tests": [t.to_json() for t in self.tests]}


@dataclass
class RunReport:
    kind: str  # "matrix", or "run" for a plain `harness run` directory
    matrix: str | None
    dir: Path
    record: RunRecord  # run.json; empty for a plain run
    cells: list[CellReport]


# -- reading a run -----------------------------------------------------------------------------------

def summarise(results: list[Result]) -> tuple[Outcome, str]:
    """A cell's outcome from its tests' outcomes: the worst one, with the first such test as the reason."""
    outcome = worst(r.outcome for r in results)
    if outcome is None:
        return Outcome.ERROR, "no tests ran"
    if outcome in GREEN:
        return outcome, ""
    bad = [r for r in results if r.outcome == outcome]
    name = bad[0].test.rsplit("::", 1)[-1]
    return outcome, f"{len(bad)} of {len(results)} tests {outcome}; first: {name}: {bad[0].reason}"


def _junit_errors(d: RunDir) -> list[Result]:
    """The errors that only JUnit has, as results: a suite that does not import is reported as a case."""
    return [Result(c.nodeid, Outcome.ERROR, message, c.time) for c in junit.read_cases(d.junit)
            for tag, message in c.problems if tag == "error"]


def judge_cell_dir(cell_dir: Path, returncode: int | None) -> tuple[Outcome, str]:
    """How a finished `harness run` went, from what it left in its results directory and its exit status."""
    d = RunDir(cell_dir)
    results = read_results(d.outcomes)
    if results:
        outcome, reason = summarise(results)
        if outcome in GREEN and returncode not in (0, 1):
            return Outcome.INFRA, f"harness run exited with status {returncode} after {len(results)} tests"
        return outcome, reason
    log = d.harness_log.read_text(errors="replace") if d.harness_log.exists() else ""
    lines = [line for line in log.splitlines() if line.strip()]
    if returncode == 5:
        return Outcome.ERROR, "no tests were collected (pytest exit status 5)"
    errors = _junit_errors(d)
    if errors:
        return Outcome.ERROR, f"{errors[0].test}: {errors[0].reason}"[:300]
    user_error = [line for line in lines if line.startswith("harness: ") and "interrupted" not in line]
    if user_error:
        return Outcome.ERROR, user_error[-1].removeprefix("harness: ")
    if returncode in (3, 4):
        return Outcome.ERROR, f"pytest exit status {returncode}: {lines[-1] if lines else ''}"
    return Outcome.INFRA, f"the cell produced no results (exit status {returncode}); see harness.log"


def _rel(path: str | None, run_dir: Path, cell_dirname: str) -> str | None:
    """A log path as recorded (absolute, maybe on another machine) made relative to the run directory."""
    marker = f"/{cell_dirname or run_dir.name}/"
    if not path or marker not in path:
        return None
    rest = path.rsplit(marker, 1)[1]
    rel = f"{cell_dirname}/{rest}" if cell_dirname else rest
    return rel if (run_dir / rel).exists() else None


def _events(test_dir: Path) -> dict[str, int] | None:
    events = read_json(test_dir / "events.json")
    if not isinstance(events, list):
        return None
    counts: dict[str, int] = {}
    for e in events:
        if isinstance(e, dict) and e.get("kind") == "start":
            counts[str(e.get("event"))] = counts.get(str(e.get("event")), 0) + 1
    return counts


def _kernel_json(d: RunDir) -> JSONObject:
    kernel = read_json(d.kernel_json)
    return kernel if isinstance(kernel, dict) else {}


def kernel_info(run_dir: Path) -> JSONObject:
    """A run's (or a cell's) kernel.json: tree, identity, release, notifier, fragments; {} when it has none."""
    return _kernel_json(RunDir(run_dir))


def _plain_cell(run_dir: Path) -> CellRecord:
    """A `harness run` directory read as a one-cell matrix: values from kernel.json and the QEMU argv."""
    d = RunDir(run_dir)
    kernel = _kernel_json(d)
    identity = str(kernel.get("identity", ""))
    m = re.match(r"debian:linux-source-(\d+\.\d+)=", identity)
    ksrc = f"debian:{m[1]}" if m else str(kernel.get("tree", "?"))
    machine = str(kernel.get("machine") or _machine_from_argv(run_dir))
    results = read_results(d.outcomes)
    files = list(dict.fromkeys(r.test.split("::")[0] for r in results)) or ["suites"]
    cell = Cell(ksrc, str(kernel.get("notifier", "on")), machine, files[0] if len(files) == 1 else "suites",
                fragment=" ".join(kernel.get("fragments") or []))
    outcome, reason = judge_cell_dir(run_dir, 0 if results else None)
    return CellRecord(cell, outcome, reason, cell.reproducer())


def _machine_from_argv(run_dir: Path) -> str:
    """The profile whose devices match the first VM's QEMU command line (kernel.json has no machine yet)."""
    vms = RunDir(run_dir).vm_dirs()  # vm-1, or vm-gw0-1 of a run with xdist workers
    argv = read_json(vms[0] / "qemu-argv.json") if vms else None
    argv = argv if isinstance(argv, list) else []
    devices = {str(argv[i + 1]).split(",")[0] for i, a in enumerate(argv[:-1]) if a == "-device"}
    for profile in sorted((paths.CONFIGS / "machines").glob("*.yaml"), key=lambda p: p.stem != "default"):
        data, _ = schema.read_yaml(profile, ReportError)  # only its devices: vm/machine.py checks the rest
        wanted = set((data if isinstance(data, dict) else {}).get("devices") or [])
        if wanted == devices - {"virtio-net-pci"}:
            return profile.stem
    return "default"


def load_cell(run_dir: Path, cell_dir: Path, record: CellRecord) -> CellReport:
    cell = record.cell
    d = RunDir(cell_dir)
    dirname = cell_dir.name if cell_dir != run_dir else ""
    results = read_results(d.outcomes) or _junit_errors(d)  # e.g. a suite that failed to import: only JUnit knows
    tests = []
    for r in results:
        # pytest leaves the file out of the node id of a suite outside the repo (its rootdir): put it back
        name = f"{cell.suite}{r.test}" if r.test.startswith("::") else r.test
        tests.append(Entry(
            name, r.outcome, r.reason, r.duration_s, _rel(r.console_log, run_dir, dirname),
            _rel(r.dmesg, run_dir, dirname), _rel(r.post_mortem.get("registers"), run_dir, dirname),
            _events(d.test_dir(r.test)), cell.reproducer(_test_arg(cell, name))))
    timings = Timings.read(d.timings_json)
    log = d.harness_log.name if d.harness_log.exists() else None
    build = record.build
    return CellReport(
        cell, record.outcome, record.reason, record.duration_s, record.attempts, record.command,
        reproducer=build.command if build and build.command else cell.reproducer(), dir=dirname or ".",
        log=f"{dirname}/{log}" if dirname and log else log,
        console_logs=[str(p.relative_to(run_dir)) for p in d.console_logs()],
        release=_kernel_json(d).get("release"), boot_s=[b.boot_to_ssh_s for b in timings.boots],
        prepare=timings.prepare, build=build, tests=tests)


def _test_arg(cell: Cell, nodeid: str) -> str:
    """The node id to reproduce with, its file spelled as the cell's suite when it is that file."""
    file, _, rest = nodeid.partition("::")
    if Path(file).name == Path(cell.suite).name:
        return f"{cell.suite}::{rest}" if rest else cell.suite
    return nodeid


def load_run(run_dir: Path) -> RunReport:
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory of results")
    records = [(p.parent, r) for p in sorted(run_dir.glob(f"*/{CELL_JSON}")) if (r := CellRecord.read(p))]
    run = RunRecord.read(run_dir / RUN_JSON) or RunRecord()
    if records:
        cells = [load_cell(run_dir, cell_dir, r) for cell_dir, r in records]
        order = {cid: n for n, cid in enumerate(run.cells)}
        cells.sort(key=lambda c: (order.get(c.id, len(order)), c.id))
        return RunReport("matrix", run.matrix or records[0][1].matrix, run_dir, run, cells)
    d = RunDir(run_dir)
    if d.outcomes.exists() or d.kernel_json.exists():
        return RunReport("run", None, run_dir, run, [load_cell(run_dir, run_dir, _plain_cell(run_dir))])
    raise ReportError(f"{run_dir} holds no results: neither <cell>/cell.json (a matrix run) nor outcomes.json "
                      "(a harness run)")


def previous_run(run_dir: Path) -> Path | None:
    """The newest run kept before this one in the same store (results/matrix-<name>/), if it finished."""
    return next(iter(previous_runs(run_dir)), None)


def previous_runs(run_dir: Path) -> list[Path]:
    """The finished runs kept before this one in the same store, newest first."""
    run_dir = Path(run_dir).resolve()
    mine = run_order(run_dir.name)
    older = [p for p in run_dir.parent.iterdir() if p.is_dir() and not p.is_symlink() and run_order(p.name) < mine
             and p != run_dir]
    found = []
    for p in sorted(older, key=lambda p: run_order(p.name), reverse=True):
        run = RunRecord.read(p / RUN_JSON)
        if (run and run.finished and not run.interrupted) or (not run and RunDir(p).outcomes.exists()):
            found.append(p)
    return found


def entries(cell: CellReport) -> dict[str, Entry]:
    """What a cell is judged by: its tests, plus a (cell) entry when it failed without a failing test."""
    out = {t.name: t for t in cell.tests}
    if cell.outcome not in GREEN and not any(t.outcome == cell.outcome for t in cell.tests):
        out[CELL_ENTRY] = Entry(CELL_ENTRY, cell.outcome, cell.reason, cell.duration_s or 0.0,
                                cell.console_logs[-1] if cell.console_logs else None, reproducer=cell.reproducer)
    return out


def count_outcomes(values: list[Outcome]) -> dict[str, int]:
    """How many of each outcome, in the severity order; outcomes that did not occur are left out."""
    return {o.value: values.count(o) for o in SEVERITY if o in values}
