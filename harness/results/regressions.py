"""Regressions: what changed from one run of a matrix to the next, cell by cell and test by test.

`harness report RUN --compare [PREV]` and the matrix runner (after each run kept in its store) call
`find_regressions(previous, current)`; the result is printed (`format_regressions`), shown on
report.html, and kept in summary.json under "comparison". Not to be confused with `harness compare`
(harness/results/compare.py), which compares a kernel tree with the same tree plus a patch series.
"""

from __future__ import annotations

import re
import shlex
import statistics
from pathlib import Path

from harness.results.cell import kernel_id
from harness.results.load import CELL_ENTRY, CellReport, RunReport, entries, kernel_info
from harness.results.outcome import FAILED, GREEN, Outcome
from harness.results.schema import Change, NewTest, Regressions, Timing, Vanished
from harness.results.visible import visible

# Timing noise on TCG, with cells (and whatever else runs on the host) sharing two cores: between two
# nightly runs of the same kernels, boot to SSH ranged from 2.7 s to 9.6 s. So a change counts only if
# it at least doubles AND moves by at least 10 s; boots are compared by their median per kernel.
NOISE_RATIO = 2.0
NOISE_MIN_DELTA_S = 10.0


def _beyond_noise(before: float | None, after: float | None) -> bool:
    if not before or after is None:
        return False
    hi, lo = max(before, after), min(before, after)
    return hi >= NOISE_RATIO * lo and hi - lo >= NOISE_MIN_DELTA_S


def find_regressions(prev: RunReport, cur: RunReport) -> Regressions:
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
                if before_cell and (hint := bisect_command(prev, before_cell, cur, c, name)):
                    item["bisect"] = hint
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


def bisect_command(prev: RunReport, before: CellReport, cur: RunReport, now: CellReport, test: str) -> str:
    """The `harness bisect` that finds the commit behind a new failure, when the cell's kernel is a git tree that
    moved from one clean commit to another between the runs; "" when it cannot (a Debian tree, a dirty tree)."""
    trees = [kernel_info(run.dir / cell.dir) for run, cell in ((prev, before), (cur, now))]
    good, bad = (re.fullmatch(r"git:([0-9a-f]{40})", str(t.get("identity", ""))) for t in trees)
    if not (good and bad) or good[1] == bad[1] or trees[0].get("tree") != trees[1].get("tree"):
        return ""
    cell = now.cell
    node = test if test != CELL_ENTRY else cell.suite
    argv = ["harness", "bisect", "--kernel-src", str(trees[1]["tree"]), "--good", good[1], "--bad", bad[1],
            *(["--notifier", cell.notifier] if cell.notifier != "on" else []),
            *(["--fragment", cell.fragment] if cell.fragment else []),
            *(["--machine", cell.machine] if cell.machine != "default" else []), node]
    return shlex.join(argv)


def _boots(cells: list[CellReport]) -> dict[str, list[float]]:
    """First boot to SSH of each cell, by kernel (the machine adds a device, not a boot)."""
    out: dict[str, list[float]] = {}
    for c in cells:
        if c.first_boot_s:
            frag = f"-{Path(c.cell.fragment).stem}" if c.cell.fragment else ""  # a KASAN kernel boots ~5x slower
            out.setdefault(f"{kernel_id(c.cell.kernel)}-{c.cell.notifier}{frag}", []).append(c.first_boot_s)
    return out


def _timing(out: dict[str, list[Timing]], cell: str, what: str, before: float | None, after: float | None) -> None:
    if _beyond_noise(before, after):
        assert before is not None and after is not None
        out["slower" if after > before else "faster"].append(
            {"cell": cell, "test": what, "before_s": before, "after_s": after})


def format_regressions(found: Regressions) -> str:
    """What `find_regressions` found, as the lines `harness report --compare` prints above the summary."""
    lines = [f"compared with {found['previous']}:"]

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {i}" for i in items)

    section("new failures", [f"{i['outcome']} {i['cell']} :: {i['test']} (was {i['was'] or 'absent'}): "
                             f"{i['reason'].splitlines()[0][:160] if i['reason'] else ''}\n"
                             f"      reproduce: {i['reproducer']}"
                             + (f"\n      find the commit: {i['bisect']}" if i.get("bisect") else "")
                             for i in found["new_failures"]])
    section("fixes", [f"{i['cell']} :: {i['test']} ({i['was']} -> {i['outcome']})" for i in found["fixes"]])
    section("slower beyond noise", [f"{i['cell']} :: {i['test']}: {i['before_s']:.1f} s -> {i['after_s']:.1f} s"
                                    for i in found["slower"]])
    section("faster beyond noise", [f"{i['cell']} :: {i['test']}: {i['before_s']:.1f} s -> {i['after_s']:.1f} s"
                                    for i in found["faster"]])
    section("new tests", [f"{i['cell']} :: {i['test']} ({i['outcome']})" for i in found["new_tests"]])
    section("vanished tests", [f"{i['cell']} :: {i['test']} (was {i['was']})" for i in found["vanished_tests"]])
    section("infrastructure failures (not regressions)", [f"{i['cell']} :: {i['test']}" for i in found["infra"]])
    if found["new_cells"]:
        lines.append(f"  new cells: {', '.join(found['new_cells'])}")
    if found["cells_not_run"]:
        lines.append(f"  cells of the previous run not run now: {', '.join(found['cells_not_run'])}")
    lines.append("  verdict: REGRESSED" if found["regressed"] else "  verdict: no regressions")
    return visible("\n".join(lines))  # reasons are guest output: no escape sequences reach the terminal
