"""Reports over a run directory: merged JUnit XML, a JSON summary, a self-contained HTML page, regressions.

A run directory is either a matrix run (one <cell-id>/ per cell, each with cell.json, written by
harness/matrix/runner.py) or a plain `harness run` directory, read as one cell. Everything here reads
files only, through the results model (model.py, rundir.py, junit.py) that wrote them, so a report
can be rebuilt anywhere from the directories that CI jobs uploaded.

    report.html    the matrix as a grid (cell x suite), failures with reproducers, slowest tests, plots
    summary.json   the schema in README.md ("Matrix runs and reports"): Summary below
    junit.xml      every cell's tests in one file, one <testsuite> per cell
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypedDict

from harness.atomic import write_text
from harness.errors import UserError
from harness.matrix.spec import Cell, kernel_id, suite_id
from harness.results import junit
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
from harness.results.outcome import FAILED, GREEN, SEVERITY, Outcome, worst
from harness.results.rundir import CELL_JSON, RUN_JSON, RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEMA = 1
CELL_ENTRY = "(cell)"  # stands for a cell that failed without a failing test: build, timeout, no results
COLOURS = {"PASS": "#2e7d32", "SKIP": "#8d8d8d", "XFAIL": "#558b2f", "FAIL": "#c62828", "CRASH": "#6a1b9a",
           "TIMEOUT": "#ef6c00", "ERROR": "#ad1457", "INFRA": "#1565c0"}
# Timing noise on TCG, with cells (and whatever else runs on the host) sharing two cores: between two
# nightly runs of the same kernels, boot to SSH ranged from 2.7 s to 9.6 s. So a change counts only if
# it at least doubles AND moves by at least 10 s; boots are compared by their median per kernel.
NOISE_RATIO = 2.0
NOISE_MIN_DELTA_S = 10.0
SLOWEST = 10


class ReportError(UserError):
    pass


# -- a run as the report reads it ---------------------------------------------------------------------

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


# -- what summary.json holds (README.md, "Matrix runs and reports") ------------------------------------

class EntryJSON(TypedDict):
    name: str
    outcome: str
    reason: str
    duration_s: float
    console_log: str | None
    dmesg: str | None
    registers: str | None
    events: dict[str, int] | None
    reproducer: str


class CellJSON(TypedDict):
    id: str
    kernel: str
    notifier: str
    fragment: str
    machine: str
    suite: str
    outcome: str
    reason: str
    infra: bool
    duration_s: float | None
    attempts: list[dict[str, object]]
    command: str
    reproducer: str
    dir: str
    log: str | None
    console_logs: list[str]
    release: str | None
    boot_s: list[float | None]
    prepare: dict[str, float]
    tests_time_s: float
    build: dict[str, object] | None
    tests: list[EntryJSON]


class Failure(TypedDict):
    cell: str
    test: str
    outcome: str
    reason: str
    reproducer: str
    log: str | None


class Slow(TypedDict):
    cell: str
    test: str
    outcome: str
    duration_s: float


class Totals(TypedDict):
    cells: int
    cell_outcomes: dict[str, int]
    tests: int
    test_outcomes: dict[str, int]
    failures: int
    infra: int


class Change(TypedDict):
    cell: str
    test: str
    outcome: str
    was: str | None  # None: the test was not there before
    reason: str
    reproducer: str


class NewTest(TypedDict):
    cell: str
    test: str
    outcome: str


class Vanished(TypedDict):
    cell: str
    test: str
    was: str


class Timing(TypedDict):
    cell: str
    test: str
    before_s: float
    after_s: float


class Noise(TypedDict):
    ratio: float
    min_delta_s: float


class Comparison(TypedDict):
    previous: str
    current: str
    new_failures: list[Change]
    fixes: list[Change]
    new_tests: list[NewTest]
    vanished_tests: list[Vanished]
    infra: list[Change]
    slower: list[Timing]
    faster: list[Timing]
    new_cells: list[str]
    cells_not_run: list[str]
    noise: Noise
    regressed: bool


class Summary(TypedDict):
    schema: int
    kind: str
    matrix: str | None
    run_dir: str
    generated: str
    started: str | None
    finished: str | None
    duration_s: float | None
    totals: Totals
    builds: list[dict[str, object]]
    cells: list[CellJSON]
    failures: list[Failure]
    infra: list[Failure]
    slowest: list[Slow]
    comparison: Comparison | None


# -- reading results ---------------------------------------------------------------------------------

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
    from harness import paths
    from harness.vm.machine import load_profile

    vms = RunDir(run_dir).vm_dirs()  # vm-1, or vm-gw0-1 of a run with xdist workers
    argv = read_json(vms[0] / "qemu-argv.json") if vms else None
    argv = argv if isinstance(argv, list) else []
    devices = {str(argv[i + 1]).split(",")[0] for i, a in enumerate(argv[:-1]) if a == "-device"}
    for profile in sorted((paths.CONFIGS / "machines").glob("*.yaml"), key=lambda p: p.stem != "default"):
        wanted = set(load_profile(str(profile)).devices)
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
    run_dir = Path(run_dir).resolve()
    older = [p for p in run_dir.parent.iterdir() if p.is_dir() and not p.is_symlink() and p.name < run_dir.name
             and p != run_dir]
    for p in sorted(older, reverse=True):
        run = RunRecord.read(p / RUN_JSON)
        if (run and run.finished and not run.interrupted) or (not run and RunDir(p).outcomes.exists()):
            return p
    return None


# -- the summary and merged JUnit -------------------------------------------------------------------

def entries(cell: CellReport) -> dict[str, Entry]:
    """What a cell is judged by: its tests, plus a (cell) entry when it failed without a failing test."""
    out = {t.name: t for t in cell.tests}
    if cell.outcome not in GREEN and not any(t.outcome == cell.outcome for t in cell.tests):
        out[CELL_ENTRY] = Entry(CELL_ENTRY, cell.outcome, cell.reason, cell.duration_s or 0.0,
                                cell.console_logs[-1] if cell.console_logs else None, reproducer=cell.reproducer)
    return out


def _count(values: list[Outcome]) -> dict[str, int]:
    return {o.value: values.count(o) for o in SEVERITY if o in values}


def build_summary(run: RunReport, comparison: Comparison | None = None) -> Summary:
    failures: list[Failure] = []
    infra: list[Failure] = []
    for c in run.cells:
        for e in entries(c).values():
            if e.outcome in FAILED or e.outcome == Outcome.INFRA:
                (infra if e.outcome == Outcome.INFRA else failures).append(
                    {"cell": c.id, "test": e.name, "outcome": e.outcome.value, "reason": e.reason,
                     "reproducer": e.reproducer, "log": e.console_log or c.log})
    tests = [t for c in run.cells for t in c.tests]
    slowest = sorted((Slow(cell=c.id, test=t.name, outcome=t.outcome.value, duration_s=t.duration_s)
                      for c in run.cells for t in c.tests), key=lambda t: -t["duration_s"])[:SLOWEST]
    meta = run.record
    return {
        "schema": SCHEMA, "kind": run.kind, "matrix": run.matrix, "run_dir": str(run.dir),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started": meta.started,
        "finished": meta.finished, "duration_s": meta.duration_s,
        "totals": {"cells": len(run.cells), "cell_outcomes": _count([c.outcome for c in run.cells]),
                   "tests": len(tests), "test_outcomes": _count([t.outcome for t in tests]),
                   "failures": len(failures), "infra": len(infra)},
        "builds": [b.to_json() for b in meta.builds],
        "cells": [c.to_json() for c in run.cells],
        "failures": failures, "infra": infra, "slowest": slowest, "comparison": comparison,
    }


def merged_junit(run: RunReport) -> ET.Element:
    """One <testsuite> per cell, test classnames prefixed with the cell id so that CI tells them apart."""
    suites = []
    for c in run.cells:
        suite = junit.Suite(c.id, {**c.cell.values(), "outcome": c.outcome.value, "reproducer": c.reproducer})
        for case in junit.read_cases(RunDir(run.dir / c.dir).junit):
            case.element.set("classname", f"{c.id}.{case.classname}".rstrip("."))
            suite.cases.append(case.element)
        if CELL_ENTRY in entries(c):
            suite.add_error(c.id, CELL_ENTRY, c.duration_s or 0, f"{c.outcome}: {c.reason}",
                            f"{c.reason}\nreproduce: {c.reproducer}")
        suites.append(suite)
    return junit.merged(f"matrix {run.matrix}" if run.matrix else "harness run", suites)


def write_report(run_dir: Path, comparison: Comparison | None = None) -> Summary:
    """Write summary.json, junit.xml (merged, matrix runs only) and report.html; return the summary."""
    run = load_run(run_dir)
    summary = build_summary(run, comparison)
    out = Path(run_dir)
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    if run.kind == "matrix":  # a plain run's own junit.xml is already the whole story
        junit.write(out / "junit.xml", merged_junit(run))
    write_text(out / "report.html", render_html(run, summary))
    return summary


def format_summary(summary: Summary) -> str:
    t = summary["totals"]
    cells = ", ".join(f"{n} {o}" for o, n in t["cell_outcomes"].items())
    tests = ", ".join(f"{n} {o}" for o, n in t["test_outcomes"].items())
    lines = [f"cells: {t['cells']} ({cells}); tests: {t['tests']} ({tests or 'none'})"]
    for title, items in (("failures", summary["failures"]), ("infrastructure (not test failures)",
                                                              summary["infra"])):
        if items:
            lines.append(f"{title}:")
            for f in items:
                lines += [f"  {f['outcome']:<7} {f['cell']} :: {f['test']}: {f['reason'].splitlines()[0][:200]}"
                          if f["reason"] else f"  {f['outcome']:<7} {f['cell']} :: {f['test']}",
                          f"          reproduce: {f['reproducer']}"]
    lines.append(f"report: {Path(summary['run_dir']) / 'report.html'}")
    return "\n".join(lines)


# -- regressions -------------------------------------------------------------------------------------

def _beyond_noise(before: float | None, after: float | None) -> bool:
    if not before or after is None:
        return False
    hi, lo = max(before, after), min(before, after)
    return hi >= NOISE_RATIO * lo and hi - lo >= NOISE_MIN_DELTA_S


def compare(prev: RunReport, cur: RunReport) -> Comparison:
    """What changed from `prev` to `cur`, cell by cell (by id) and test by test (by node id).

    New failure: failing now (FAIL/CRASH/TIMEOUT/ERROR), and passing, skipped, INFRA or absent before.
    Fix: failing before, passing or skipped now (a (cell) entry that went away counts as fixed).
    INFRA now is reported apart and is not a regression. Timings (tests that passed both times, and
    the median boot per kernel): see NOISE_*; a slowdown beyond noise is a regression, a speedup is
    reported. Cells of `prev` not run now are listed, not judged.
    """
    prev_cells = {c.id: c for c in prev.cells}
    cur_ids = {c.id for c in cur.cells}
    new_failures: list[Change] = []
    fixes: list[Change] = []
    infra: list[Change] = []
    new_tests: list[NewTest] = []
    vanished: list[Vanished] = []
    timings: dict[str, list[Timing]] = {"slower": [], "faster": []}
    new_cells = []
    for c in cur.cells:
        before_cell = prev_cells.get(c.id)
        if before_cell is None:
            new_cells.append(c.id)
        now, before = entries(c), entries(before_cell) if before_cell else {}
        for name, e in now.items():
            was = before.get(name)
            was_outcome = was.outcome if was else None
            item: Change = {"cell": c.id, "test": name, "outcome": e.outcome.value,
                            "was": was_outcome.value if was_outcome else None, "reason": e.reason,
                            "reproducer": e.reproducer}
            if e.outcome == Outcome.INFRA:
                infra.append(item)
            elif e.outcome in FAILED and was_outcome not in FAILED:
                new_failures.append(item)
            elif e.outcome in GREEN and was_outcome in FAILED:
                fixes.append(item)
            if was is None and before_cell is not None and name != CELL_ENTRY:
                new_tests.append({"cell": c.id, "test": name, "outcome": e.outcome.value})
            if was and e.outcome == Outcome.PASS and was_outcome == Outcome.PASS:
                _timing(timings, c.id, name, was.duration_s, e.duration_s)
        for name, gone in before.items():
            if name in now:
                continue
            if name == CELL_ENTRY:
                if gone.outcome in FAILED and c.outcome in GREEN:  # else its tests tell what failed
                    fixes.append({"cell": c.id, "test": name, "outcome": c.outcome.value, "was": gone.outcome.value,
                                  "reason": "", "reproducer": c.reproducer})
            else:
                vanished.append({"cell": c.id, "test": name, "was": gone.outcome.value})
    before_boots, now_boots = _boots(prev.cells), _boots(cur.cells)
    for key, boots in now_boots.items():
        if key in before_boots:
            _timing(timings, f"{key} (median of {len(boots)} cells)", "boot to SSH",
                    statistics.median(before_boots[key]), statistics.median(boots))
    return {"previous": str(prev.dir), "current": str(cur.dir), "new_failures": new_failures, "fixes": fixes,
            "new_tests": new_tests, "vanished_tests": vanished, "infra": infra, "slower": timings["slower"],
            "faster": timings["faster"], "new_cells": new_cells,
            "cells_not_run": [cid for cid in prev_cells if cid not in cur_ids],
            "noise": {"ratio": NOISE_RATIO, "min_delta_s": NOISE_MIN_DELTA_S},
            "regressed": bool(new_failures or timings["slower"])}


def _boots(cells: list[CellReport]) -> dict[str, list[float]]:
    """First boot to SSH of each cell, by kernel (the machine adds a device, not a boot)."""
    out: dict[str, list[float]] = {}
    for c in cells:
        if c.first_boot_s:
            frag = f"-{Path(c.cell.fragment).stem}" if c.cell.fragment else ""  # a KASAN kernel boots ~5x slower
            out.setdefault(f"{kernel_id(c.cell.kernel)}-{c.cell.notifier}{frag}", []).append(c.first_boot_s)
    return out


def _fragment_note(cell: CellReport) -> str:
    return f", fragment {_e(cell.cell.fragment)}" if cell.cell.fragment else ""


def _timing(out: dict[str, list[Timing]], cell: str, what: str, before: float | None, after: float | None) -> None:
    if _beyond_noise(before, after):
        assert before is not None and after is not None
        out["slower" if after > before else "faster"].append(
            {"cell": cell, "test": what, "before_s": before, "after_s": after})


def format_comparison(cmp: Comparison) -> str:
    lines = [f"compared with {cmp['previous']}:"]

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {i}" for i in items)

    section("new failures", [f"{i['outcome']} {i['cell']} :: {i['test']} (was {i['was'] or 'absent'}): "
                             f"{i['reason'].splitlines()[0][:160] if i['reason'] else ''}\n"
                             f"      reproduce: {i['reproducer']}" for i in cmp["new_failures"]])
    section("fixes", [f"{i['cell']} :: {i['test']} ({i['was']} -> {i['outcome']})" for i in cmp["fixes"]])
    section("slower beyond noise", [f"{i['cell']} :: {i['test']}: {i['before_s']:.1f} s -> {i['after_s']:.1f} s"
                                    for i in cmp["slower"]])
    section("faster beyond noise", [f"{i['cell']} :: {i['test']}: {i['before_s']:.1f} s -> {i['after_s']:.1f} s"
                                    for i in cmp["faster"]])
    section("new tests", [f"{i['cell']} :: {i['test']} ({i['outcome']})" for i in cmp["new_tests"]])
    section("vanished tests", [f"{i['cell']} :: {i['test']} (was {i['was']})" for i in cmp["vanished_tests"]])
    section("infrastructure failures (not regressions)", [f"{i['cell']} :: {i['test']}" for i in cmp["infra"]])
    if cmp["new_cells"]:
        lines.append(f"  new cells: {', '.join(cmp['new_cells'])}")
    if cmp["cells_not_run"]:
        lines.append(f"  cells of the previous run not run now: {', '.join(cmp['cells_not_run'])}")
    lines.append("  verdict: REGRESSED" if cmp["regressed"] else "  verdict: no regressions")
    return "\n".join(lines)


# -- HTML --------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
.grid td.cell { color: #fff; text-align: center; min-width: 6.5em; font-size: 0.9em; }
table.failures { table-layout: fixed; width: 100%; } table.failures td { overflow-wrap: anywhere; }
.grid td.cell a { color: #fff; } .grid td.none { background: #fafafa; color: #aaa; text-align: center; }
.badge { display: inline-block; color: #fff; padding: 1px 7px; border-radius: 3px; font-size: 0.85em; }
code { background: #f4f4f4; padding: 1px 4px; font-size: 0.9em; word-break: break-all; }
.reason { max-width: 55em; white-space: pre-wrap; }
.muted { color: #777; } img { max-width: 100%; border: 1px solid #eee; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(outcome: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(outcome, "#555")}">{_e(outcome)}</span>'


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else ""


def render_html(run: RunReport, summary: Summary) -> str:
    title = f"matrix {run.matrix}" if run.matrix else "harness run"
    t = summary["totals"]
    meta = run.record
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)} <span class='muted'>{_e(run.dir.name)}</span>"
             "</h1>", "<p>" + " ".join(f"{_badge(o)} {n}" for o, n in t["cell_outcomes"].items()) +
             f" &nbsp; {t['cells']} cells, {t['tests']} tests"
             + (f", {meta.duration_s:.0f} s" if meta.duration_s else "")
             + (f", started {_e(meta.started)}" if meta.started else "") + "</p>"]
    parts.append(_html_grid(run))
    if summary["comparison"]:
        parts.append(_html_comparison(summary["comparison"]))
    parts.append(_html_failures("Failures", summary["failures"], "No test failures."))
    parts.append(_html_failures("Infrastructure failures (not test failures; each was retried once)",
                                summary["infra"], "None."))
    parts.append(_html_slowest(summary["slowest"]))
    parts.append(_html_plots(run))
    parts.append(_html_cells(run))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_grid(run: RunReport) -> str:
    def row(c: CellReport) -> tuple[str, str, str, str]:
        return c.cell.kernel, c.cell.notifier, c.cell.fragment, c.cell.machine

    rows = list(dict.fromkeys(row(c) for c in run.cells))
    suites = list(dict.fromkeys(c.cell.suite for c in run.cells))
    by_key = {(*row(c), c.cell.suite): c for c in run.cells}
    out = ["<h2>Matrix</h2><table class='grid'><tr><th>kernel</th><th>notifier</th><th>fragment</th><th>machine</th>",
           *(f"<th>{_e(suite_id(s))}</th>" for s in suites), "</tr>"]
    for kernel, notifier, fragment, machine in rows:
        out.append(f"<tr><th>{_e(kernel)}</th><th>{_e(notifier)}</th><th>{_e(fragment or '-')}</th>"
                   f"<th>{_e(machine)}</th>")
        for s in suites:
            c = by_key.get((kernel, notifier, fragment, machine, s))
            if c is None:
                out.append("<td class='none'>&mdash;</td>")
                continue
            counts = _count([x.outcome for x in c.tests])
            detail = ", ".join(f"{n} {o.lower()}" for o, n in counts.items()) or _e(c.reason[:60])
            consoles = [_link(p, f"console {n}") for n, p in enumerate(c.console_logs, 1)]
            if len(consoles) > 2:  # a cell that replaced many VMs: the rest are in its section below
                consoles = [*consoles[:2], f"<a href='#{_e(c.id)}'>+{len(consoles) - 2}</a>"]
            links = " ".join(x for x in (_link(c.log, "log"), *consoles) if x)
            retried = " (retried)" if len(c.attempts) > 1 else ""
            out.append(f"<td class='cell' style='background:{COLOURS.get(c.outcome, '#555')}' "
                       f"title='{_e(c.id)}'><a href='#{_e(c.id)}'><b>{_e(c.outcome)}</b></a>{retried}"
                       f"<br>{detail}<br><small>{links}</small></td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _html_failures(title: str, items: list[Failure], empty: str) -> str:
    if not items:
        return f"<h2>{_e(title)}</h2><p class='muted'>{_e(empty)}</p>"
    rows = "".join(
        f"<tr><td>{_badge(f['outcome'])}</td><td><a href='#{_e(f['cell'])}'>{_e(f['cell'])}</a></td>"
        f"<td>{_e(f['test'])}</td><td class='reason'>{_e(f['reason'][:600])}</td>"
        f"<td><code>{_e(f['reproducer'])}</code></td><td>{_link(f['log'], 'log')}</td></tr>"
        for f in items)
    cols = "".join(f"<col style='width:{w}'>" for w in ("7em", "11em", "28%", "24%", "auto", "3em"))
    return (f"<h2>{_e(title)}</h2><table class='failures'><colgroup>{cols}</colgroup><tr><th>outcome</th>"
            f"<th>cell</th><th>test</th><th>reason</th><th>reproducer</th><th></th></tr>{rows}</table>")


def _html_slowest(slowest: list[Slow]) -> str:
    rows = "".join(f"<tr><td>{t['duration_s']:.2f} s</td><td>{_e(t['cell'])}</td><td>{_e(t['test'])}</td>"
                   f"<td>{_badge(t['outcome'])}</td></tr>" for t in slowest)
    return (f"<h2>Slowest tests</h2><table><tr><th>time</th><th>cell</th><th>test</th><th></th></tr>{rows}"
            "</table>")


def _change(i: Mapping[str, object]) -> str:
    """One item of a comparison list: a timing, or an outcome that changed."""
    if "before_s" in i:
        return f"{i['before_s']:.1f} s &rarr; {i['after_s']:.1f} s"
    return f"{_e(i.get('was') or 'absent')} &rarr; {_e(i.get('outcome', ''))}"


def _html_comparison(cmp: Comparison) -> str:
    verdict = ("<b style='color:#c62828'>regressed</b>" if cmp["regressed"]
               else "<b style='color:#2e7d32'>no regressions</b>")
    out = [f"<h2>Compared with {_e(Path(cmp['previous']).name)}: {verdict}</h2>"]
    lists: tuple[tuple[str, Sequence[Mapping[str, object]]], ...] = (
        ("New failures", cmp["new_failures"]), ("Fixes", cmp["fixes"]), ("Slower beyond noise", cmp["slower"]),
        ("Faster beyond noise", cmp["faster"]), ("New tests", cmp["new_tests"]),
        ("Vanished tests", cmp["vanished_tests"]), ("Infrastructure failures", cmp["infra"]))
    for title, items in lists:
        if not items:
            continue
        lis = "".join(f"<li><b>{_e(i['cell'])}</b> :: {_e(i['test'])} ({_change(i)})</li>" for i in items)
        # Long lists (a new suite brings dozens of new tests) fold away, so that the page stays readable.
        summary = f"{title}: {len(items)}"
        out.append(f"<details{' open' if len(items) <= 10 else ''}><summary>{_e(summary)}</summary><ul>{lis}"
                   "</ul></details>")
    for title, cells in (("New cells", cmp["new_cells"]), ("Cells of the previous run not run now",
                                                             cmp["cells_not_run"])):
        if cells:
            out.append(f"<p>{_e(title)}: {_e(', '.join(cells))}</p>")
    out.append(f"<p class='muted'>Timing noise: a change counts when it is at least {NOISE_RATIO:g}&times; "
               f"and at least {NOISE_MIN_DELTA_S:g} s.</p>")
    return "".join(out)


def _html_cells(run: RunReport) -> str:
    out = ["<h2>Cells</h2>"]
    for c in run.cells:
        rows = "".join(
            f"<tr><td>{_badge(t.outcome)}</td><td>{_e(t.name)}</td><td>{t.duration_s:.2f} s</td>"
            f"<td class='reason'>{_e(t.reason[:300])}</td><td>{_link(t.console_log, 'console')} "
            f"{_link(t.dmesg, 'dmesg')} {_link(t.registers, 'registers')}</td></tr>" for t in c.tests)
        attempts = "; ".join(f"attempt {n}: {a.outcome} {a.reason}" for n, a in enumerate(c.attempts, 1)
                             if len(c.attempts) > 1)
        boot = ", ".join(f"{b:.1f} s" for b in c.boot_s if b is not None)
        out.append(
            f"<h3 id='{_e(c.id)}'>{_badge(c.outcome)} {_e(c.id)}</h3><p>"
            f"<code>{_e(c.command)}</code><br>kernel {_e(c.cell.kernel)} ({_e(c.release or '?')}), notifier "
            f"{_e(c.cell.notifier)}{_fragment_note(c)}, machine {_e(c.cell.machine)}, suite {_e(c.cell.suite)}"
            + (f"; cell {c.duration_s:.0f} s" if c.duration_s else "")
            + (f"; boot to SSH {boot}" if boot else "") + f" {_link(c.log, 'harness.log')}"
            + (f"<br><span class='reason'>{_e(c.reason)}</span>" if c.reason else "")
            + (f"<br>{_e(attempts)}" if attempts else "")
            + (f"<br>kernel build failed; reproduce: <code>{_e(c.build.command)}</code>"
               f"<pre>{_e(c.build.error[-3000:])}</pre>" if c.build else "")
            + "</p>" + (f"<table>{rows}</table>" if rows else ""))
    return "".join(out)


def _html_plots(run: RunReport) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<h2>Plots</h2><p class='muted'>matplotlib is not installed: no plots.</p>"
    out = ["<h2>Plots</h2>"]
    for title, fig in (("Notifier events per workload (invalidate_range_start, by event)", _plot_events(run, plt)),
                       ("Boot and suite times per cell", _plot_times(run, plt))):
        if fig is None:
            out.append(f"<h3>{_e(title)}</h3><p class='muted'>no data</p>")
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.append(f"<h3>{_e(title)}</h3><img alt='{_e(title)}' src='data:image/png;base64,"
                   f"{base64.b64encode(buf.getvalue()).decode()}'>")
    return "".join(out)


def _workload(nodeid: str) -> str:
    """A test's short name for a plot: its parameters when it has them (the workload), else its function."""
    name = nodeid.rsplit("::", 1)[-1]
    return name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else name


def _plot_events(run: RunReport, plt: ModuleType) -> Figure | None:
    # One bar per (workload, kernel): the machine does not change what the notifier sees, so the
    # first cell of each kernel stands for it, and the two kernel series sit side by side.
    bars: dict[tuple[str, str], dict[str, int]] = {}
    for c in run.cells:
        for t in c.tests:
            if t.events:
                bars.setdefault((t.name, kernel_id(c.cell.kernel)), t.events)
    if not bars:
        return None
    keys = sorted(bars, key=lambda k: k[0])  # stable: each workload's kernels stay in matrix order
    kinds = sorted({kind for ev in bars.values() for kind in ev})
    labels = [f"{_workload(name)} [{kid}]" for name, kid in keys]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.26 * len(keys)))
    left = [0] * len(keys)
    for kind in kinds:
        values = [bars[k].get(kind, 0) for k in keys]
        ax.barh(range(len(keys)), values, left=left, label=kind)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(keys)), labels, fontsize=8)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlabel("invalidate_range_start events seen by the probe, by event")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _plot_times(run: RunReport, plt: ModuleType) -> Figure | None:
    cells = [c for c in run.cells if c.boot_s or c.tests or c.duration_s]
    if not cells:
        return None
    labels = [c.id for c in cells]
    series = {"boot to SSH (first VM)": [c.first_boot_s or 0 for c in cells],
              "tests (sum of test times)": [c.tests_time_s for c in cells],
              "whole cell (wall)": [c.duration_s or 0 for c in cells]}
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.3 * len(cells)))
    height = 0.8 / len(series)
    for n, (name, values) in enumerate(series.items()):
        ax.barh([i + n * height for i in range(len(cells))], values, height=height, label=name)
    ax.set_yticks([i + height for i in range(len(cells))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")  # a cell killed at its timeout would flatten every other bar on a linear axis
    ax.set_xlabel("seconds (log scale)")
    ax.legend(loc="lower right", fontsize=8)
    return fig
