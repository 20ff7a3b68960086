"""The results a run leaves on disk, as typed records: each written and read by the same code.

    Result      one test, as the pytest plugin records it     <run>/outcomes.json (a list)
    Timings     prepare and boot-to-SSH times                 <run>/timings.json
    CellRecord  how a matrix cell ended, with its attempts     <cell>/cell.json
    RunRecord   a matrix run: its cells, builds and times     <matrix run>/run.json

`to_json` gives what goes on disk; `from_json` reads it back, tolerant of keys that older runs did
not write yet, so that a report can still be built from a run kept months ago.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.atomic import write_text
from harness.kernel.arch import HOST
from harness.results.cell import Cell
from harness.results.outcome import Outcome

CELL_SCHEMA = 1

# What json.loads gives for one object: parsed here, at the edge, into the records below.
JSONObject = Mapping[str, Any]


def read_json(path: Path) -> object:
    """A JSON file's content, or None when it is missing or not JSON (a run cut short)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: object, indent: int = 1) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


@dataclass
class Result:
    """One test's outcome, a one-line reason, and where its logs are."""

    test: str  # the pytest node id
    outcome: Outcome
    reason: str = ""
    duration_s: float = 0.0
    console_log: str | None = None
    dmesg: str | None = None
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # {"post_mortem": ...} of a timeout

    @property
    def post_mortem(self) -> dict[str, str]:
        """What a timed-out guest left (harness/vm/qmp.py): registers, screen, dmesg, by name."""
        return self.extra.get("post_mortem", {})

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "outcome": self.outcome.value}

    @classmethod
    def from_json(cls, d: JSONObject) -> Result:
        return cls(str(d["test"]), Outcome(d["outcome"]), str(d.get("reason") or ""),
                   float(d.get("duration_s") or 0.0), d.get("console_log"), d.get("dmesg"), dict(d.get("extra") or {}))


def write_results(path: Path, results: list[Result]) -> None:
    _write_json(path, [r.to_json() for r in results])


def read_results(path: Path) -> list[Result]:
    """The tests of outcomes.json; none when the file is missing or unreadable (a run that never finished)."""
    data = read_json(path)
    return [Result.from_json(d) for d in data] if isinstance(data, list) else []


@dataclass
class Boot:
    vm: int
    boot_to_ssh_s: float | None
    accel: str = ""
    boot_timeout_s: float | None = None
    worker: str = ""  # the pytest-xdist worker that booted it (its folder: vm-<worker>-<vm>); "" without xdist
    machine: str = ""  # a profile other than the run's (--machine): its folder is under <run>/<machine>/
    # stage -> host seconds since QEMU started, and the guest's uptimes (harness/vm/timeline.py)
    timeline: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Restore:
    """A VM restored from a snapshot (harness/vm/snapshot.py) instead of booted: QEMU start to its first command."""

    vm: int
    restore_s: float
    snapshot: str  # its key: the folder under the cache's snapshots/
    worker: str = ""
    machine: str = ""


@dataclass
class Timings:
    prepare: dict[str, float] = field(default_factory=dict)  # source_s, kernel_s, image_s
    boots: list[Boot] = field(default_factory=list)  # one per VM booted, in boot order (per worker under xdist)
    restores: list[Restore] = field(default_factory=list)  # one per VM restored from a snapshot

    @classmethod
    def merge(cls, workers: Mapping[str, Timings]) -> Timings:
        """One run's timings from its xdist workers': every worker's boots, labelled by worker, in worker
        order; each prepare stage's longest (every worker prepares the same kernel: one builds it, the
        others wait for it or find it cached)."""
        prepare: dict[str, float] = {}
        boots: list[Boot] = []
        restores: list[Restore] = []
        for wid in sorted(workers, key=_worker_order):
            for stage, seconds in workers[wid].prepare.items():
                prepare[stage] = max(prepare.get(stage, seconds), seconds)
            boots += [replace(b, worker=wid) for b in workers[wid].boots]
            restores += [replace(r, worker=wid) for r in workers[wid].restores]
        return cls(prepare, boots, restores)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: JSONObject) -> Timings:
        boots = [Boot(int(b.get("vm", n)), b.get("boot_to_ssh_s"), str(b.get("accel", "")), b.get("boot_timeout_s"),
                      str(b.get("worker") or ""), str(b.get("machine") or ""), dict(b.get("timeline") or {}))
                 for n, b in enumerate(d.get("boots") or [], 1)]
        restores = [Restore(int(r["vm"]), float(r["restore_s"]), str(r["snapshot"]), str(r.get("worker") or ""),
                            str(r.get("machine") or "")) for r in d.get("restores") or []]
        return cls(dict(d.get("prepare") or {}), boots, restores)

    def write(self, path: Path) -> None:
        _write_json(path, self.to_json(), indent=2)

    @classmethod
    def read(cls, path: Path) -> Timings:
        data = read_json(path)
        return cls.from_json(data) if isinstance(data, dict) else cls()


def _worker_order(wid: str) -> tuple[int, str]:
    """gw2 before gw10."""
    digits = wid.lstrip("gw")
    return (int(digits) if digits.isdigit() else -1, wid)


@dataclass
class Attempt:
    """One try of a matrix cell (an INFRA cell is tried twice)."""

    outcome: Outcome
    reason: str
    returncode: int | None = None
    started: str | None = None
    duration_s: float = 0.0
    dir: str = ""  # the attempt's results directory, relative to the run's

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "outcome": self.outcome.value}

    @classmethod
    def from_json(cls, d: JSONObject) -> Attempt:
        return cls(Outcome(d["outcome"]), str(d.get("reason") or ""), d.get("returncode"), d.get("started"),
                   float(d.get("duration_s") or 0.0), str(d.get("dir") or ""))


@dataclass
class FailedBuild:
    """The kernel build that a cell needed and did not get."""

    log: str  # relative to the cell's directory
    command: str  # the reproducer: `harness kernel ...`
    error: str

    def to_json(self) -> dict[str, object]:
        return {"ok": False, **asdict(self)}

    @classmethod
    def from_json(cls, d: JSONObject) -> FailedBuild:
        return cls(str(d.get("log") or ""), str(d.get("command") or ""), str(d.get("error") or ""))


@dataclass
class CellRecord:
    """cell.json: how a matrix cell ended, after its last attempt."""

    cell: Cell
    outcome: Outcome
    reason: str
    command: str  # the cell's reproducer
    attempts: list[Attempt] = field(default_factory=list)
    duration_s: float | None = None
    build: FailedBuild | None = None
    matrix: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"schema": CELL_SCHEMA, "matrix": self.matrix, **self.cell.to_json(), "outcome": self.outcome.value,
                "reason": self.reason, "command": self.command, "attempts": [a.to_json() for a in self.attempts],
                "duration_s": self.duration_s, "build": self.build.to_json() if self.build else None}

    @classmethod
    def from_json(cls, d: JSONObject) -> CellRecord:
        cell = Cell.from_json(dict(d))
        return cls(cell, Outcome(d["outcome"]), str(d.get("reason") or ""), str(d.get("command") or cell.reproducer()),
                   [Attempt.from_json(a) for a in d.get("attempts") or []], d.get("duration_s"),
                   FailedBuild.from_json(d["build"]) if d.get("build") else None, d.get("matrix"))

    def write(self, path: Path) -> None:
        _write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> CellRecord | None:
        """The record, or None for a cell that never finished (no cell.json, or one without an outcome)."""
        data = read_json(path)
        return cls.from_json(data) if isinstance(data, dict) and "outcome" in data else None


@dataclass
class Build:
    """One kernel build of a matrix run."""

    kernel: str
    notifier: str
    ok: bool
    seconds: float
    log: str  # relative to the run directory
    error: str = ""
    fragment: str = ""
    arch: str = HOST

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: JSONObject) -> Build:
        return cls(str(d["kernel"]), str(d["notifier"]), bool(d["ok"]), float(d.get("seconds") or 0.0),
                   str(d.get("log") or ""), str(d.get("error") or ""), str(d.get("fragment") or ""),
                   str(d.get("arch") or HOST))


@dataclass
class RunRecord:
    """run.json: a matrix run, written when it starts (finished: None) and again when it ends."""

    matrix: str | None = None
    matrix_file: str = ""
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    jobs: int = 1
    cells: list[str] = field(default_factory=list)  # cell ids, in matrix order
    builds: list[Build] = field(default_factory=list)
    interrupted: bool = False  # an interrupted run is reported, never the baseline of regressions

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: JSONObject) -> RunRecord:
        return cls(d.get("matrix"), str(d.get("matrix_file") or ""), d.get("started"), d.get("finished"),
                   d.get("duration_s"), int(d.get("jobs") or 1), [str(c) for c in d.get("cells") or []],
                   [Build.from_json(b) for b in d.get("builds") or []], bool(d.get("interrupted")))

    def write(self, path: Path) -> None:
        _write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> RunRecord | None:
        data = read_json(path)
        return cls.from_json(data) if isinstance(data, dict) else None


EXIT_JSON = "exit.json"  # `harness --record FILE`: how a command ended (a matrix cell's, in its directory)


@dataclass
class ExitRecord:
    """How one `harness` command ended, as its process's caller reads it (never its output's text):
    the exit status, and for a command that failed before its verdict, which kind of failure and its message.
    kind: "" (the command's own verdict), "user" (bad input), "infra" (the machine: apt, network, QEMU, a
    full disk), "fault" (the guest the command drove crashed, hung or was lost), "interrupted"."""

    command: str  # the subcommand: run, kernel, ...
    exit_status: int
    kind: str = ""
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: JSONObject) -> ExitRecord:
        return cls(str(d.get("command") or ""), int(d["exit_status"]), str(d.get("kind") or ""),
                   str(d.get("message") or ""))

    def write(self, path: Path) -> None:
        _write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> ExitRecord | None:
        """The record, or None when the command left none (it was killed, or never started)."""
        data = read_json(path)
        try:
            return cls.from_json(data) if isinstance(data, dict) else None
        except (KeyError, TypeError, ValueError):
            return None
