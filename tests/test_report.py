"""Reports on fabricated result directories: merged JUnit, summary.json, the HTML page, and regressions.

The directories are written with the writers of the real thing: the plugin's Result, write_results and
RunDir, the matrix runner's CellRecord and RunRecord. Only pytest's own junit.xml, and the kernel.json that
the plugin writes inline, are written here by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import paths
from harness.matrix.spec import Cell
from harness.results import html, load, regressions, report
from harness.results.model import Attempt, Boot, CellRecord, FailedBuild, Result, RunRecord, Timings, write_results
from harness.results.outcome import Outcome, worst
from harness.results.rundir import RUN_JSON, RunDir

EVENTS = "suites/test_notifier_events.py"
AXIS = "suites/test_notifier_axis.py"


def make_cell(run: Path, cell: Cell, tests: dict[str, tuple[str, float]], outcome: str | None = None,
              reason: str = "", boot_s: float = 2.5, events: dict[str, list[str]] | None = None,
              build_error: str | None = None) -> None:
    """A cell directory as harness/matrix/runner.py leaves it; tests maps a name to (outcome, seconds)."""
    d = RunDir.make(run / cell.id)
    results = []
    cases = []
    for name, (out, seconds) in tests.items():
        nodeid = f"{cell.suite}::{name}"
        results.append(Result(nodeid, Outcome(out), "" if out == "PASS" else f"{name} said no", seconds,
                              console_log=f"/elsewhere/run/{cell.id}/vm-1/console.log"))
        child = "" if out in ("PASS", "SKIP") else f'<failure message="{name} said no">trace</failure>'
        child = '<skipped message="no"/>' if out == "SKIP" else child
        cases.append(f'<testcase classname="{Path(cell.suite).stem}" name="{name}" time="{seconds}">{child}'
                     "</testcase>")
        for kind in (events or {}).get(name, []):
            tdir = d.test_dir(nodeid)
            tdir.mkdir(parents=True, exist_ok=True)
            old = json.loads((tdir / "events.json").read_text()) if (tdir / "events.json").exists() else []
            (tdir / "events.json").write_text(json.dumps([*old, {"kind": "start", "event": kind},
                                                          {"kind": "end", "event": kind}]))
    if build_error is None:
        write_results(d.outcomes, results)
        d.junit.write_text(f"<testsuites><testsuite name='pytest'>{''.join(cases)}</testsuite></testsuites>")
        Timings(boots=[Boot(1, boot_s)]).write(d.timings_json)
        d.kernel_json.write_text(json.dumps({"release": "6.12.117", "notifier": cell.notifier}))
        (d.root / "vm-1").mkdir()
        (d.root / "vm-1" / "console.log").write_text("console\n")
        d.harness_log.write_text("log\n")
    else:
        (d.root / "build-error.txt").write_text(build_error)
    judged = Outcome(outcome) if outcome else worst(r.outcome for r in results) or Outcome.ERROR  # no tests: ERROR
    build = None if build_error is None else FailedBuild("../builds/x.log", cell.build_reproducer(), build_error)
    CellRecord(cell, judged, reason, cell.reproducer(), [Attempt(judged, reason, duration_s=20.0)], 20.0, build,
               "fab").write(d.cell_json)


C_ON = Cell("debian:6.12", "on", "default", EVENTS)
C_OFF = Cell("debian:6.12", "off", "default", EVENTS)
C_AXIS = Cell("debian:6.12", "on", "virtio-gpu", AXIS)
C_61 = Cell("debian:6.1", "on", "default", EVENTS)


def fabricate(run: Path, *, munmap: str = "PASS", axis_seconds: float = 1.0, boot_s: float = 2.5,
              build_61: bool = False, extra_test: bool = False, infra: bool = False, c61: str = "PASS") -> Path:
    run.mkdir(parents=True)
    RunRecord("fab", started="t0", finished="t1", duration_s=99,
              cells=[C_ON.id, C_OFF.id, C_AXIS.id, C_61.id]).write(run / RUN_JSON)
    tests = {"test_munmap": (munmap, 0.4)} | ({"test_new": ("PASS", 0.1)} if extra_test else {})
    make_cell(run, C_ON, tests, events={"test_munmap": ["UNMAP", "CLEAR", "UNMAP"]}, boot_s=boot_s)
    make_cell(run, C_OFF, {"test_munmap": ("SKIP", 0.0)})
    if infra:
        make_cell(run, C_AXIS, {"test_kallsyms": ("INFRA", 0.2), "test_probe": ("PASS", axis_seconds)})
    else:
        make_cell(run, C_AXIS, {"test_kallsyms": ("PASS", 0.2), "test_probe": ("PASS", axis_seconds)})
    if build_61:
        make_cell(run, C_61, {}, outcome="ERROR", reason="kernel build failed: make failed",
                  build_error="harness: kernel build failed (exit 2)\nmm/x.c: error")
    else:
        make_cell(run, C_61, {"test_munmap": (c61, 0.5)})
    return run


def test_merged_junit(tmp_path: Path):
    run = fabricate(tmp_path / "r", munmap="FAIL", build_61=True)
    report.write_report(run)
    root = ET.parse(run / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [C_ON.id, C_OFF.id, C_AXIS.id, C_61.id]
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "1", "1", "1")
    (case,) = suites[C_ON.id].findall("testcase")
    assert case.get("classname") == f"{C_ON.id}.test_notifier_events"
    assert case.find("failure") is not None
    (cell_case,) = suites[C_61.id].findall("testcase")
    assert cell_case.get("name") == "(cell)"
    assert "kernel build failed" in cell_case.find("error").get("message")
    props = {p.get("name"): p.get("value") for p in suites[C_61.id].iter("property")}
    assert props["reproducer"] == "harness kernel --kernel-src debian:6.1 --notifier on"


def test_summary(tmp_path: Path):
    run = fabricate(tmp_path / "r", munmap="FAIL", build_61=True, infra=True)
    s = report.write_report(run)
    assert s == json.loads((run / "summary.json").read_text())
    assert s["schema"] == 1 and s["kind"] == "matrix" and s["matrix"] == "fab"
    assert s["totals"]["cells"] == 4
    assert s["totals"]["cell_outcomes"] == {"FAIL": 1, "ERROR": 1, "INFRA": 1, "SKIP": 1}
    assert s["totals"]["test_outcomes"] == {"FAIL": 1, "INFRA": 1, "PASS": 1, "SKIP": 1}
    failures = {(f["cell"], f["test"]): f for f in s["failures"]}
    assert set(failures) == {(C_ON.id, f"{EVENTS}::test_munmap"), (C_61.id, "(cell)")}
    assert failures[C_ON.id, f"{EVENTS}::test_munmap"]["reproducer"] == (
        f"harness run --kernel-src debian:6.12 --notifier on --machine default {EVENTS} -k test_munmap")
    assert failures[C_61.id, "(cell)"]["reproducer"] == "harness kernel --kernel-src debian:6.1 --notifier on"
    assert [(i["cell"], i["outcome"]) for i in s["infra"]] == [(C_AXIS.id, "INFRA")]
    assert [t["duration_s"] for t in s["slowest"]] == sorted((t["duration_s"] for t in s["slowest"]), reverse=True)
    on = next(c for c in s["cells"] if c["id"] == C_ON.id)
    assert on["tests"][0]["events"] == {"UNMAP": 2, "CLEAR": 1}
    assert on["tests"][0]["console_log"] == f"{C_ON.id}/vm-1/console.log"  # made relative to this run
    assert on["boot_s"] == [2.5]


def test_html_is_self_contained(tmp_path: Path):
    run = fabricate(tmp_path / "r", munmap="CRASH", build_61=True)
    report.write_report(run)
    page = (run / "report.html").read_text()
    assert "<style>" in page
    assert not re.search(r"""(src|href)=['"]https?:""", page), "nothing loaded from the network"
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 2  # events and times plots
    for href in re.findall(r"""href=["']([^"'#]+)["']""", page):
        assert (run / href).exists(), href  # every log link points into the run directory
    assert html.COLOURS["CRASH"] in page and html.COLOURS["ERROR"] in page
    assert f"harness run --kernel-src debian:6.12 --notifier on --machine default {EVENTS} -k test_munmap" in page
    assert "harness kernel --kernel-src debian:6.1 --notifier on" in page
    # The grid: one row per (kernel, notifier, machine), one column per suite, an empty slot marked.
    grid = page[page.index("class='grid'"):page.index("</table>", page.index("class='grid'"))]
    assert grid.count("<tr>") == 5 and grid.count("class='none'") == 4


def test_compare_reports_exactly_what_changed(tmp_path: Path):
    prev = fabricate(tmp_path / "a")
    cur = fabricate(tmp_path / "b", munmap="FAIL")
    cmp = regressions.find_regressions(load.load_run(prev), load.load_run(cur))
    assert [(i["cell"], i["test"], i["was"], i["outcome"]) for i in cmp["new_failures"]] == [
        (C_ON.id, f"{EVENTS}::test_munmap", "PASS", "FAIL")]
    assert not cmp["fixes"] and not cmp["new_tests"] and not cmp["vanished_tests"] and not cmp["slower"]
    assert cmp["regressed"]
    back = regressions.find_regressions(load.load_run(cur), load.load_run(prev))
    assert [(i["cell"], i["test"]) for i in back["fixes"]] == [(C_ON.id, f"{EVENTS}::test_munmap")]
    assert not back["new_failures"] and not back["regressed"]


def test_compare_new_and_vanished_tests_and_build_failures(tmp_path: Path):
    prev = load.load_run(fabricate(tmp_path / "a"))
    cur = load.load_run(fabricate(tmp_path / "b", build_61=True, extra_test=True))
    cmp = regressions.find_regressions(prev, cur)
    assert [(i["cell"], i["test"]) for i in cmp["new_failures"]] == [(C_61.id, "(cell)")]
    assert [(i["cell"], i["test"]) for i in cmp["new_tests"]] == [(C_ON.id, f"{EVENTS}::test_new")]
    assert [(i["cell"], i["test"]) for i in cmp["vanished_tests"]] == [(C_61.id, f"{EVENTS}::test_munmap")]
    fixed = regressions.find_regressions(cur, prev)  # the build works again: the (cell) failure is gone
    assert [(i["cell"], i["test"], i["was"]) for i in fixed["fixes"]] == [(C_61.id, "(cell)", "ERROR")]


def test_a_cell_failure_that_became_a_test_failure_is_no_fix(tmp_path: Path):
    cmp = regressions.find_regressions(load.load_run(fabricate(tmp_path / "a", build_61=True)),
                         load.load_run(fabricate(tmp_path / "b", c61="FAIL")))
    assert not cmp["fixes"]
    assert [(i["cell"], i["was"], i["outcome"]) for i in cmp["new_failures"]] == [(C_61.id, None, "FAIL")]


def test_infra_is_not_a_regression(tmp_path: Path):
    cmp = regressions.find_regressions(load.load_run(fabricate(tmp_path / "a")),
                         load.load_run(fabricate(tmp_path / "b", infra=True)))
    assert [(i["cell"], i["outcome"]) for i in cmp["infra"]] == [(C_AXIS.id, "INFRA")]
    assert not cmp["new_failures"] and not cmp["regressed"]


@pytest.mark.parametrize(("before", "after", "counted"), [
    (1.0, 1.9, False),  # under 2x
    (1.0, 10.5, False),  # 10.5x, but only 9.5 s more
    (1.0, 11.5, True),  # 11.5x and 10.5 s more
    (20.0, 35.0, False),  # 15 s more, but under 2x
    (20.0, 41.0, True),
])
def test_timing_noise(tmp_path: Path, before: float, after: float, counted: bool):
    cmp = regressions.find_regressions(load.load_run(fabricate(tmp_path / "a", axis_seconds=before)),
                         load.load_run(fabricate(tmp_path / "b", axis_seconds=after)))
    assert [i["test"] for i in cmp["slower"]] == ([f"{AXIS}::test_probe"] if counted else [])
    assert cmp["regressed"] == counted
    faster = regressions.find_regressions(load.load_run(tmp_path / "b"), load.load_run(tmp_path / "a"))
    assert len(faster["faster"]) == int(counted) and not faster["regressed"]


def test_boots_are_compared_by_their_median_per_kernel(tmp_path: Path):
    cmp = regressions.find_regressions(load.load_run(fabricate(tmp_path / "a", boot_s=2.5)),
                         load.load_run(fabricate(tmp_path / "b", boot_s=30.0)))
    # 6.12-on: the cells C_ON (2.5 -> 30) and C_AXIS (2.5 both times) make the median 2.5 -> 16.25
    assert [(i["cell"], i["test"], i["after_s"]) for i in cmp["slower"]] == [
        ("6.12-on (median of 2 cells)", "boot to SSH", 16.25)]
    cmp = regressions.find_regressions(load.load_run(tmp_path / "a"),
                                       load.load_run(fabricate(tmp_path / "c", boot_s=9.0)))
    assert not cmp["slower"], "2.5 s -> 5.75 s: contention on a shared host, not news"


def test_subset_runs_judge_only_their_cells(tmp_path: Path):
    prev = fabricate(tmp_path / "a")
    cur = tmp_path / "b"
    cur.mkdir()
    make_cell(cur, C_ON, {"test_munmap": ("PASS", 0.4)})
    cmp = regressions.find_regressions(load.load_run(prev), load.load_run(cur))
    assert sorted(cmp["cells_not_run"]) == sorted([C_OFF.id, C_AXIS.id, C_61.id])
    assert not cmp["vanished_tests"] and not cmp["regressed"]


def test_previous_run(tmp_path: Path):
    store = tmp_path / "matrix-fab"
    a = fabricate(store / "20260101-000000")
    b = fabricate(store / "20260102-000000")
    unfinished = fabricate(store / "20260103-000000")
    (unfinished / "run.json").write_text(json.dumps({"matrix": "fab", "finished": None}))
    interrupted = fabricate(store / "20260103-120000")
    (interrupted / "run.json").write_text(json.dumps({"matrix": "fab", "finished": "t", "interrupted": True}))
    c = fabricate(store / "20260104-000000")
    (store / "latest").symlink_to(c.name)
    assert load.previous_run(c) == b
    assert load.previous_run(store / "latest") == b
    assert load.previous_run(b) == a
    assert load.previous_run(a) is None


def test_plain_run_directory(tmp_path: Path):
    """A `harness run` directory is one cell, its values read from kernel.json and the QEMU command line."""
    run = tmp_path / "20260101-000000"
    (run / "vm-1").mkdir(parents=True)
    (run / "vm-1" / "console.log").write_text("x")
    (run / "vm-1" / "qemu-argv.json").write_text(json.dumps(["qemu", "-device", "virtio-gpu-pci", "-device",
                                                             "virtio-net-pci,netdev=net0"]))
    (run / "kernel.json").write_text(json.dumps({"identity": "debian:linux-source-6.1=6.1.192-2", "notifier": "off",
                                                 "release": "6.1.192"}))
    write_results(RunDir(run).outcomes, [Result(f"{EVENTS}::test_munmap", Outcome.FAIL, "no", 1.0,
                                                 console_log=str(run / "vm-1" / "console.log"))])
    s = report.write_report(run)
    assert s["kind"] == "run"
    (cell,) = s["cells"]
    assert cell["id"] == "6.1-off-virtio-gpu-notifier_events" and cell["outcome"] == "FAIL"
    assert s["failures"][0]["reproducer"] == (
        f"harness run --kernel-src debian:6.1 --notifier off --machine virtio-gpu {EVENTS} -k test_munmap")
    assert not (run / "junit.xml").exists(), "a plain run keeps its own junit.xml"
    assert (run / "report.html").exists()


def test_not_a_results_directory(tmp_path: Path):
    with pytest.raises(load.ReportError, match="holds no results"):
        load.load_run(tmp_path)


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_exit_status_says_whether_anything_regressed(tmp_path: Path):
    store = tmp_path / "matrix-fab"
    fabricate(store / "20260101-000000")
    fabricate(store / "20260102-000000", munmap="FAIL")
    fabricate(store / "20260103-000000")
    proc = harness("report", str(store / "20260102-000000"), "--compare")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "new failures (1):" in proc.stdout and "verdict: REGRESSED" in proc.stdout
    assert "-k test_munmap" in proc.stdout
    proc = harness("report", str(store / "20260103-000000"), "--compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fixes (1):" in proc.stdout and "verdict: no regressions" in proc.stdout
    proc = harness("report", str(store / "20260103-000000"), "--compare", str(store / "20260101-000000"))
    assert proc.returncode == 0 and "fixes" not in proc.stdout
    summary = json.loads((store / "20260103-000000" / "summary.json").read_text())
    assert summary["comparison"]["previous"].endswith("20260101-000000")
    proc = harness("report", str(tmp_path / "nothing-here"))
    assert proc.returncode == 2 and proc.stderr.startswith("harness: ")
