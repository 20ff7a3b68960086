"""Reports over a run directory: merged JUnit XML, a JSON summary, a self-contained HTML page, regressions.

A run directory is either a matrix run (one <cell-id>/ per cell, each with cell.json, written by
harness/matrix_run.py) or a plain `harness run` directory, read as one cell. Everything here reads
files only, so a report can be rebuilt anywhere from the directories that CI jobs uploaded.

    report.html    the matrix as a grid (cell x suite), failures with reproducers, slowest tests, plots
    summary.json   the schema in README.md ("Matrix runs and reports")
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
from pathlib import Path
from typing import Any

from harness.atomic import write_text
from harness.matrix.spec import Cell, kernel_id, suite_id
from harness.results.outcome import Outcome

SCHEMA = 1
# Worst first: a cell takes the worst of its tests' outcomes.
SEVERITY = ("CRASH", "TIMEOUT", "FAIL", "ERROR", "INFRA", "PASS", "SKIP")
FAILED = {"CRASH", "TIMEOUT", "FAIL", "ERROR"}  # test failures; INFRA is reported apart
GREEN = {"PASS", "SKIP"}
CELL_ENTRY = "(cell)"  # stands for a cell that failed without a failing test: build, timeout, no results
COLOURS = {"PASS": "#2e7d32", "SKIP": "#8d8d8d", "FAIL": "#c62828", "CRASH": "#6a1b9a", "TIMEOUT": "#ef6c00",
           "ERROR": "#ad1457", "INFRA": "#1565c0"}
# Timing noise on TCG, with cells (and whatever else runs on the host) sharing two cores: between two
# nightly runs of the same kernels, boot to SSH ranged from 2.7 s to 9.6 s. So a change counts only if
# it at least doubles AND moves by at least 10 s; boots are compared by their median per kernel.
NOISE_RATIO = 2.0
NOISE_MIN_DELTA_S = 10.0
SLOWEST = 10


class ReportError(Exception):
    pass


# -- reading results ---------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_dir_name(nodeid: str) -> str:
    """The per-test directory harness/plugin.py makes (RunDir.test_dir)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


def summarise(tests: list[dict[str, Any]]) -> tuple[Outcome, str]:
    """A cell's outcome from its tests' outcomes: the worst one, with the first such test as the reason."""
    if not tests:
        return Outcome.ERROR, "no tests ran"
    worst = min((t["outcome"] for t in tests), key=SEVERITY.index)
    if worst in GREEN:
        return Outcome(worst), ""
    bad = [t for t in tests if t["outcome"] == worst]
    first = bad[0]
    name = first["test"].rsplit("::", 1)[-1]
    return Outcome(worst), f"{len(bad)} of {len(tests)} tests {worst}; first: {name}: {first.get('reason', '')}"


def junit_cases(path: Path) -> list[ET.Element]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    return list(root.iter("testcase"))


def judge_cell_dir(cell_dir: Path, returncode: int | None) -> tuple[Outcome, str]:
    """How a finished `harness run` went, from what it left in its results directory and its exit status."""
    results = _read_json(cell_dir / "outcomes.json")
    if results:
        outcome, reason = summarise(results)
        if outcome in (Outcome.PASS, Outcome.SKIP) and returncode not in (0, 1):
            return Outcome.INFRA, f"harness run exited with status {returncode} after {len(results)} tests"
        return outcome, reason
    log = (cell_dir / "harness.log").read_text(errors="replace") if (cell_dir / "harness.log").exists() else ""
    lines = [line for line in log.splitlines() if line.strip()]
    if returncode == 5:
        return Outcome.ERROR, "no tests were collected (pytest exit status 5)"
    for case in junit_cases(cell_dir / "junit.xml"):
        for err in case.findall("error"):  # a suite that does not import: pytest reports it as a case
            return Outcome.ERROR, f"{case.get('classname')}::{case.get('name')}: {err.get('message', '')}"[:300]
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
    events = _read_json(test_dir / "events.json")
    if not isinstance(events, list):
        return None
    counts: dict[str, int] = {}
    for e in events:
        if isinstance(e, dict) and e.get("kind") == "start":
            counts[str(e.get("event"))] = counts.get(str(e.get("event")), 0) + 1
    return counts


def _plain_cell(run_dir: Path) -> dict[str, Any]:
    """A `harness run` directory read as a one-cell matrix: values from kernel.json and the QEMU argv."""
    kernel = _read_json(run_dir / "kernel.json") or {}
    identity = str(kernel.get("identity", ""))
    m = re.match(r"debian:linux-source-(\d+\.\d+)=", identity)
    ksrc = f"debian:{m[1]}" if m else str(kernel.get("tree", "?"))
    machine = kernel.get("machine") or _machine_from_argv(run_dir)
    results = _read_json(run_dir / "outcomes.json") or []
    files = list(dict.fromkeys(t["test"].split("::")[0] for t in results)) or ["suites"]
    cell = Cell(ksrc, str(kernel.get("notifier", "on")), machine, files[0] if len(files) == 1 else "suites",
                fragment=" ".join(kernel.get("fragments") or []))
    outcome, reason = judge_cell_dir(run_dir, 0 if results else None)
    return {**cell.to_json(),
            "outcome": outcome.value, "reason": reason, "command": cell.reproducer(), "attempts": [],
            "duration_s": None, "build": None}


def _machine_from_argv(run_dir: Path) -> str:
    """The profile whose devices match the first VM's QEMU command line (kernel.json has no machine yet)."""
    import yaml

    from harness import paths

    argv = _read_json(run_dir / "vm-1" / "qemu-argv.json") or []
    devices = {argv[i + 1].split(",")[0] for i, a in enumerate(argv[:-1]) if a == "-device"}
    for profile in sorted((paths.CONFIGS / "machines").glob("*.yaml"), key=lambda p: p.stem != "default"):
        wanted = set((yaml.safe_load(profile.read_text()) or {}).get("devices") or [])
        if wanted == devices - {"virtio-net-pci"}:
            return profile.stem
    return "default"


def load_cell(run_dir: Path, cell_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    cell = Cell.from_json(info)
    dirname = cell_dir.name if cell_dir != run_dir else ""
    results = _read_json(cell_dir / "outcomes.json") or []
    if not results:  # e.g. a suite that failed to import: only JUnit knows
        for case in junit_cases(cell_dir / "junit.xml"):
            for err in case.findall("error"):
                results.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": "ERROR",
                                "reason": err.get("message", ""), "duration_s": float(case.get("time") or 0)})
    tests = []
    for r in results:
        tdir = cell_dir / "tests" / test_dir_name(r["test"])
        # pytest leaves the file out of the node id of a suite outside the repo (its rootdir): put it back
        name = f"{cell.suite}{r['test']}" if r["test"].startswith("::") else r["test"]
        tests.append({
            "name": name, "outcome": r["outcome"], "reason": r.get("reason", ""),
            "duration_s": float(r.get("duration_s") or 0.0),
            "console_log": _rel(r.get("console_log"), run_dir, dirname),
            "dmesg": _rel(r.get("dmesg"), run_dir, dirname),
            # a timeout's CPU registers, kept over QMP before QEMU was stopped (harness/qmp.py)
            "registers": _rel((r.get("extra") or {}).get("post_mortem", {}).get("registers"), run_dir, dirname),
            "events": _events(tdir), "reproducer": cell.reproducer(_test_arg(cell, name)),
        })
    timings = _read_json(cell_dir / "timings.json") or {}
    kernel = _read_json(cell_dir / "kernel.json") or {}
    log = "harness.log" if (cell_dir / "harness.log").exists() else None
    consoles = sorted(str(p.relative_to(run_dir)) for p in cell_dir.glob("vm-*/console.log"))
    build = info.get("build")
    return {
        "id": info.get("id") or cell.id, "kernel": cell.kernel, "notifier": cell.notifier,
        "fragment": cell.fragment, "machine": cell.machine,
        "suite": cell.suite, "outcome": info["outcome"], "reason": info.get("reason", ""),
        "infra": info["outcome"] == "INFRA", "duration_s": info.get("duration_s"),
        "attempts": info.get("attempts", []), "command": info.get("command") or cell.reproducer(),
        "reproducer": (build or {}).get("command") or cell.reproducer(), "dir": dirname or ".",
        "log": f"{dirname}/{log}" if dirname and log else log, "console_logs": consoles,
        "release": kernel.get("release"), "boot_s": [b.get("boot_to_ssh_s") for b in timings.get("boots", [])],
        "prepare": timings.get("prepare", {}), "tests_time_s": round(sum(t["duration_s"] for t in tests), 3),
        "build": build, "tests": tests,
    }


def _test_arg(cell: Cell, nodeid: str) -> str:
    """The node id to reproduce with, its file spelled as the cell's suite when it is that file."""
    file, _, rest = nodeid.partition("::")
    if Path(file).name == Path(cell.suite).name:
        return f"{cell.suite}::{rest}" if rest else cell.suite
    return nodeid


def load_run(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory of results")
    cells = []
    for info_path in sorted(run_dir.glob("*/cell.json")):
        info = _read_json(info_path)
        if isinstance(info, dict) and "outcome" in info:
            cells.append(load_cell(run_dir, info_path.parent, info))
    run = _read_json(run_dir / "run.json") or {}
    if cells:
        order = {cid: n for n, cid in enumerate(run.get("cells", []))}
        cells.sort(key=lambda c: (order.get(c["id"], len(order)), c["id"]))
        matrix = run.get("matrix") or _read_json(next(run_dir.glob("*/cell.json"))).get("matrix")
        return {"kind": "matrix", "matrix": matrix, "dir": run_dir, "run": run, "cells": cells}
    if (run_dir / "outcomes.json").exists() or (run_dir / "kernel.json").exists():
        cell = load_cell(run_dir, run_dir, _plain_cell(run_dir))
        return {"kind": "run", "matrix": None, "dir": run_dir, "run": run, "cells": [cell]}
    raise ReportError(f"{run_dir} holds no results: neither <cell>/cell.json (a matrix run) nor outcomes.json "
                      "(a harness run)")


def previous_run(run_dir: Path) -> Path | None:
    """The newest run kept before this one in the same store (results/matrix-<name>/), if it finished."""
    run_dir = Path(run_dir).resolve()
    older = [p for p in run_dir.parent.iterdir() if p.is_dir() and not p.is_symlink() and p.name < run_dir.name
             and p != run_dir]
    for p in sorted(older, reverse=True):
        run = _read_json(p / "run.json")
        if (run and run.get("finished") and not run.get("interrupted")) or (not run and (p / "outcomes.json").exists()):
            return p
    return None


# -- the summary and merged JUnit -------------------------------------------------------------------

def entries(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a cell is judged by: its tests, plus a (cell) entry when it failed without a failing test."""
    out = {t["name"]: t for t in cell["tests"]}
    if cell["outcome"] not in GREEN and not any(t["outcome"] == cell["outcome"] for t in cell["tests"]):
        out[CELL_ENTRY] = {"name": CELL_ENTRY, "outcome": cell["outcome"], "reason": cell["reason"],
                           "duration_s": cell.get("duration_s") or 0.0, "reproducer": cell["reproducer"],
                           "console_log": cell["console_logs"][-1] if cell["console_logs"] else None}
    return out


def _count(values: list[str]) -> dict[str, int]:
    return {o: values.count(o) for o in SEVERITY if o in values}


def build_summary(run: dict[str, Any], comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    cells = run["cells"]
    failures, infra = [], []
    for c in cells:
        for e in entries(c).values():
            if e["outcome"] in FAILED or e["outcome"] == "INFRA":
                item = {"cell": c["id"], "test": e["name"], "outcome": e["outcome"], "reason": e["reason"],
                        "reproducer": e["reproducer"], "log": e.get("console_log") or c["log"]}
                (infra if e["outcome"] == "INFRA" else failures).append(item)
    tests = [t for c in cells for t in c["tests"]]
    slowest = sorted(({"cell": c["id"], "test": t["name"], "outcome": t["outcome"], "duration_s": t["duration_s"]}
                      for c in cells for t in c["tests"]), key=lambda t: -t["duration_s"])[:SLOWEST]
    meta = run["run"]
    return {
        "schema": SCHEMA, "kind": run["kind"], "matrix": run["matrix"], "run_dir": str(run["dir"]),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started": meta.get("started"),
        "finished": meta.get("finished"), "duration_s": meta.get("duration_s"),
        "totals": {"cells": len(cells), "cell_outcomes": _count([c["outcome"] for c in cells]),
                   "tests": len(tests), "test_outcomes": _count([t["outcome"] for t in tests]),
                   "failures": len(failures), "infra": len(infra)},
        "builds": meta.get("builds", []),
        "cells": cells,
        "failures": failures, "infra": infra, "slowest": slowest, "comparison": comparison,
    }


def merged_junit(run: dict[str, Any]) -> ET.Element:
    """One <testsuite> per cell, test classnames prefixed with the cell id so that CI tells them apart."""
    root = ET.Element("testsuites", name=f"matrix {run['matrix']}" if run["matrix"] else "harness run")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for c in run["cells"]:
        suite = ET.SubElement(root, "testsuite", name=c["id"])
        props = ET.SubElement(suite, "properties")
        for key in ("kernel", "notifier", "fragment", "machine", "suite", "outcome", "reproducer"):
            ET.SubElement(props, "property", name=key, value=str(c.get(key, "")))
        cases = junit_cases(run["dir"] / c["dir"] / "junit.xml")
        for case in cases:
            case.set("classname", f"{c['id']}.{case.get('classname', '')}".rstrip("."))
            suite.append(case)
        if CELL_ENTRY in entries(c):
            case = ET.SubElement(suite, "testcase", classname=c["id"], name=CELL_ENTRY,
                                 time=str(c.get("duration_s") or 0))
            ET.SubElement(case, "error", message=f"{c['outcome']}: {c['reason']}").text = (
                f"{c['reason']}\nreproduce: {c['reproducer']}")
        counts = {"tests": len(suite.findall("testcase")),
                  "failures": sum(1 for t in suite.iter("testcase") if t.find("failure") is not None),
                  "errors": sum(1 for t in suite.iter("testcase") if t.find("error") is not None),
                  "skipped": sum(1 for t in suite.iter("testcase") if t.find("skipped") is not None)}
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{sum(float(t.get('time') or 0) for t in suite.iter('testcase')):.3f}")
    for key, value in totals.items():
        root.set(key, str(value))
    return root


def write_report(run_dir: Path, comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json, junit.xml (merged, matrix runs only) and report.html; return the summary."""
    run = load_run(run_dir)
    summary = build_summary(run, comparison)
    out = Path(run_dir)
    write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    if run["kind"] == "matrix":  # a plain run's own junit.xml is already the whole story
        tree = ET.ElementTree(merged_junit(run))
        ET.indent(tree)
        buf = io.BytesIO()
        tree.write(buf, encoding="utf-8", xml_declaration=True)
        write_text(out / "junit.xml", buf.getvalue().decode())
    write_text(out / "report.html", render_html(run, summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
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


def compare(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    """What changed from `prev` to `cur`, cell by cell (by id) and test by test (by node id).

    New failure: failing now (FAIL/CRASH/TIMEOUT/ERROR), and passing, skipped, INFRA or absent before.
    Fix: failing before, passing or skipped now (a (cell) entry that went away counts as fixed).
    INFRA now is reported apart and is not a regression. Timings (tests that passed both times, and
    the median boot per kernel): see NOISE_*; a slowdown beyond noise is a regression, a speedup is
    reported. Cells of `prev` not run now are listed, not judged.
    """
    prev_cells = {c["id"]: c for c in prev["cells"]}
    out: dict[str, Any] = {"previous": str(prev["dir"]), "current": str(cur["dir"]), "new_failures": [],
                           "fixes": [], "new_tests": [], "vanished_tests": [], "infra": [], "slower": [],
                           "faster": [], "new_cells": [], "cells_not_run": [],
                           "noise": {"ratio": NOISE_RATIO, "min_delta_s": NOISE_MIN_DELTA_S}}
    cur_ids = {c["id"] for c in cur["cells"]}
    out["cells_not_run"] = [cid for cid in prev_cells if cid not in cur_ids]
    for c in cur["cells"]:
        before_cell = prev_cells.get(c["id"])
        if before_cell is None:
            out["new_cells"].append(c["id"])
        now, before = entries(c), entries(before_cell) if before_cell else {}
        for name, e in now.items():
            was = before.get(name)
            was_outcome = was["outcome"] if was else None
            item = {"cell": c["id"], "test": name, "outcome": e["outcome"], "was": was_outcome,
                    "reason": e["reason"], "reproducer": e["reproducer"]}
            if e["outcome"] == "INFRA":
                out["infra"].append(item)
            elif e["outcome"] in FAILED and was_outcome not in FAILED:
                out["new_failures"].append(item)
            elif e["outcome"] in GREEN and was_outcome in FAILED:
                out["fixes"].append(item)
            if was is None and before_cell is not None and name != CELL_ENTRY:
                out["new_tests"].append({"cell": c["id"], "test": name, "outcome": e["outcome"]})
            if was and e["outcome"] == "PASS" and was_outcome == "PASS":
                _timing(out, c["id"], name, was["duration_s"], e["duration_s"])
        for name, was in before.items():
            if name in now:
                continue
            if name == CELL_ENTRY:
                if was["outcome"] in FAILED and c["outcome"] in GREEN:  # else its tests tell what failed
                    out["fixes"].append({"cell": c["id"], "test": name, "outcome": c["outcome"],
                                         "was": was["outcome"], "reason": "", "reproducer": c["reproducer"]})
            else:
                out["vanished_tests"].append({"cell": c["id"], "test": name, "was": was["outcome"]})
    before_boots, now_boots = _boots(prev["cells"]), _boots(cur["cells"])
    for key, boots in now_boots.items():
        if key in before_boots:
            _timing(out, f"{key} (median of {len(boots)} cells)", "boot to SSH",
                    statistics.median(before_boots[key]), statistics.median(boots))
    out["regressed"] = bool(out["new_failures"] or out["slower"])
    return out


def _boots(cells: list[dict[str, Any]]) -> dict[str, list[float]]:
    """First boot to SSH of each cell, by kernel (the machine adds a device, not a boot)."""
    out: dict[str, list[float]] = {}
    for c in cells:
        if c["boot_s"] and c["boot_s"][0]:
            frag = f"-{Path(c['fragment']).stem}" if c.get("fragment") else ""  # a KASAN kernel boots ~5x slower
            out.setdefault(f"{kernel_id(c['kernel'])}-{c['notifier']}{frag}", []).append(c["boot_s"][0])
    return out


def _fragment_note(cell: dict[str, Any]) -> str:
    return f", fragment {_e(cell['fragment'])}" if cell.get("fragment") else ""


def _timing(out: dict[str, Any], cell: str, what: str, before: float | None, after: float | None) -> None:
    if _beyond_noise(before, after):
        assert before is not None and after is not None
        out["slower" if after > before else "faster"].append(
            {"cell": cell, "test": what, "before_s": before, "after_s": after})


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"compared with {cmp['previous']}:"]

    def section(title: str, items: list[dict[str, Any]], fmt) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {fmt(i)}" for i in items)

    section("new failures", cmp["new_failures"], lambda i: f"{i['outcome']} {i['cell']} :: {i['test']} "
            f"(was {i['was'] or 'absent'}): {i['reason'].splitlines()[0][:160] if i['reason'] else ''}\n"
            f"      reproduce: {i['reproducer']}")
    section("fixes", cmp["fixes"], lambda i: f"{i['cell']} :: {i['test']} ({i['was']} -> {i['outcome']})")
    section("slower beyond noise", cmp["slower"], lambda i: f"{i['cell']} :: {i['test']}: "
            f"{i['before_s']:.1f} s -> {i['after_s']:.1f} s")
    section("faster beyond noise", cmp["faster"], lambda i: f"{i['cell']} :: {i['test']}: "
            f"{i['before_s']:.1f} s -> {i['after_s']:.1f} s")
    section("new tests", cmp["new_tests"], lambda i: f"{i['cell']} :: {i['test']} ({i['outcome']})")
    section("vanished tests", cmp["vanished_tests"], lambda i: f"{i['cell']} :: {i['test']} (was {i['was']})")
    section("infrastructure failures (not regressions)", cmp["infra"], lambda i: f"{i['cell']} :: {i['test']}")
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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(outcome: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(outcome, "#555")}">{_e(outcome)}</span>'


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else ""


def render_html(run: dict[str, Any], summary: dict[str, Any]) -> str:
    title = f"matrix {run['matrix']}" if run["matrix"] else "harness run"
    t = summary["totals"]
    meta = run["run"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)} <span class='muted'>{_e(run['dir'].name)}</span>"
             "</h1>", "<p>" + " ".join(f"{_badge(o)} {n}" for o, n in t["cell_outcomes"].items()) +
             f" &nbsp; {t['cells']} cells, {t['tests']} tests"
             + (f", {meta['duration_s']:.0f} s" if meta.get("duration_s") else "")
             + (f", started {_e(meta['started'])}" if meta.get("started") else "") + "</p>"]
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


def _html_grid(run: dict[str, Any]) -> str:
    rows = list(dict.fromkeys((c["kernel"], c["notifier"], c.get("fragment", ""), c["machine"]) for c in run["cells"]))
    suites = list(dict.fromkeys(c["suite"] for c in run["cells"]))
    by_key = {(c["kernel"], c["notifier"], c.get("fragment", ""), c["machine"], c["suite"]): c for c in run["cells"]}
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
            counts = _count([x["outcome"] for x in c["tests"]])
            detail = ", ".join(f"{n} {o.lower()}" for o, n in counts.items()) or _e(c["reason"][:60])
            consoles = [_link(p, f"console {n}") for n, p in enumerate(c["console_logs"], 1)]
            if len(consoles) > 2:  # a cell that replaced many VMs: the rest are in its section below
                consoles = [*consoles[:2], f"<a href='#{_e(c['id'])}'>+{len(consoles) - 2}</a>"]
            links = " ".join(x for x in (_link(c["log"], "log"), *consoles) if x)
            retried = " (retried)" if len(c["attempts"]) > 1 else ""
            out.append(f"<td class='cell' style='background:{COLOURS.get(c['outcome'], '#555')}' "
                       f"title='{_e(c['id'])}'><a href='#{_e(c['id'])}'><b>{_e(c['outcome'])}</b></a>{retried}"
                       f"<br>{detail}<br><small>{links}</small></td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _html_failures(title: str, items: list[dict[str, Any]], empty: str) -> str:
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


def _html_slowest(slowest: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{t['duration_s']:.2f} s</td><td>{_e(t['cell'])}</td><td>{_e(t['test'])}</td>"
                   f"<td>{_badge(t['outcome'])}</td></tr>" for t in slowest)
    return (f"<h2>Slowest tests</h2><table><tr><th>time</th><th>cell</th><th>test</th><th></th></tr>{rows}"
            "</table>")


def _html_comparison(cmp: dict[str, Any]) -> str:
    verdict = ("<b style='color:#c62828'>regressed</b>" if cmp["regressed"]
               else "<b style='color:#2e7d32'>no regressions</b>")
    out = [f"<h2>Compared with {_e(Path(cmp['previous']).name)}: {verdict}</h2>"]
    for key, title in (("new_failures", "New failures"), ("fixes", "Fixes"), ("slower", "Slower beyond noise"),
                       ("faster", "Faster beyond noise"), ("new_tests", "New tests"),
                       ("vanished_tests", "Vanished tests"), ("infra", "Infrastructure failures")):
        if not cmp[key]:
            continue
        items = "".join(
            f"<li><b>{_e(i['cell'])}</b> :: {_e(i['test'])} ("
            + (f"{i['before_s']:.1f} s &rarr; {i['after_s']:.1f} s" if "before_s" in i
               else f"{_e(i.get('was') or 'absent')} &rarr; {_e(i.get('outcome', ''))}") + ")</li>" for i in cmp[key])
        # Long lists (a new suite brings dozens of new tests) fold away, so that the page stays readable.
        summary = f"{title}: {len(cmp[key])}"
        out.append(f"<details{' open' if len(cmp[key]) <= 10 else ''}><summary>{_e(summary)}</summary><ul>{items}"
                   "</ul></details>")
    for key, title in (("new_cells", "New cells"), ("cells_not_run", "Cells of the previous run not run now")):
        if cmp[key]:
            out.append(f"<p>{_e(title)}: {_e(', '.join(cmp[key]))}</p>")
    out.append(f"<p class='muted'>Timing noise: a change counts when it is at least {NOISE_RATIO:g}&times; "
               f"and at least {NOISE_MIN_DELTA_S:g} s.</p>")
    return "".join(out)


def _html_cells(run: dict[str, Any]) -> str:
    out = ["<h2>Cells</h2>"]
    for c in run["cells"]:
        rows = "".join(
            f"<tr><td>{_badge(t['outcome'])}</td><td>{_e(t['name'])}</td><td>{t['duration_s']:.2f} s</td>"
            f"<td class='reason'>{_e(t['reason'][:300])}</td><td>{_link(t['console_log'], 'console')} "
            f"{_link(t['dmesg'], 'dmesg')} {_link(t.get('registers'), 'registers')}</td></tr>" for t in c["tests"])
        attempts = "; ".join(f"attempt {n}: {a['outcome']} {a['reason']}" for n, a in enumerate(c["attempts"], 1)
                             if len(c["attempts"]) > 1)
        boot = ", ".join(f"{b:.1f} s" for b in c["boot_s"] if b is not None)
        out.append(
            f"<h3 id='{_e(c['id'])}'>{_badge(c['outcome'])} {_e(c['id'])}</h3><p>"
            f"<code>{_e(c['command'])}</code><br>kernel {_e(c['kernel'])} ({_e(c['release'] or '?')}), notifier "
            f"{_e(c['notifier'])}{_fragment_note(c)}, machine {_e(c['machine'])}, suite {_e(c['suite'])}"
            + (f"; cell {c['duration_s']:.0f} s" if c.get("duration_s") else "")
            + (f"; boot to SSH {boot}" if boot else "") + f" {_link(c['log'], 'harness.log')}"
            + (f"<br><span class='reason'>{_e(c['reason'])}</span>" if c["reason"] else "")
            + (f"<br>{_e(attempts)}" if attempts else "")
            + (f"<br>kernel build failed; reproduce: <code>{_e(c['build']['command'])}</code>"
               f"<pre>{_e(c['build']['error'][-3000:])}</pre>" if c.get("build") else "")
            + "</p>" + (f"<table>{rows}</table>" if rows else ""))
    return "".join(out)


def _html_plots(run: dict[str, Any]) -> str:
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


def _plot_events(run: dict[str, Any], plt: Any) -> Any:
    # One bar per (workload, kernel): the machine does not change what the notifier sees, so the
    # first cell of each kernel stands for it, and the two kernel series sit side by side.
    bars: dict[tuple[str, str], dict[str, int]] = {}
    for c in run["cells"]:
        for t in c["tests"]:
            if t["events"]:
                bars.setdefault((t["name"], kernel_id(c["kernel"])), t["events"])
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


def _plot_times(run: dict[str, Any], plt: Any) -> Any:
    cells = [c for c in run["cells"] if c["boot_s"] or c["tests"] or c.get("duration_s")]
    if not cells:
        return None
    labels = [c["id"] for c in cells]
    series = {"boot to SSH (first VM)": [c["boot_s"][0] if c["boot_s"] and c["boot_s"][0] else 0 for c in cells],
              "tests (sum of test times)": [c["tests_time_s"] for c in cells],
              "whole cell (wall)": [c.get("duration_s") or 0 for c in cells]}
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
