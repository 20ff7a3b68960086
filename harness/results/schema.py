"""What summary.json holds (README.md, "Matrix runs and reports"): its schema, as typed dicts.

Types only, so that every module of a report (load, summary, regressions, html) can name them without
importing each other. `Regressions` is what `harness report --compare` found between two runs of the
same matrix (harness/results/regressions.py); it is kept under the summary's "comparison" key, the
name the schema has always had.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

SCHEMA = 1


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
    flaky: int


class Change(TypedDict):
    cell: str
    test: str
    outcome: str
    was: str | None  # None: the test was not there before
    reason: str
    reproducer: str
    bisect: NotRequired[str]  # a new failure of a git tree whose commit moved: the `harness bisect` that finds why


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


class Regressions(TypedDict):
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


class Unstable(TypedDict):
    cell: str
    test: str
    flaky: int  # FLAKY in this many of the runs looked at
    runs: int


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
    flaky: list[Failure]  # failed, then passed on a fresh guest: neither a failure nor a pass
    unstable: list[Unstable]  # tests that were FLAKY too often in the runs before (a matrix's store)
    slowest: list[Slow]
    comparison: Regressions | None  # the key keeps its first name: the schema is public
