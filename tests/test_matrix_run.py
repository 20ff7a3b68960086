"""The matrix runner with a stand-in harness (tests/fake_harness.py): parallel cells, timeouts, the INFRA
retry, a failed kernel build, and a cell that crashes, none of which stops the other cells."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

from harness import paths
from harness.matrix import spec
from harness.matrix.runner import Runner

FAKE = [sys.executable, str(paths.REPO / "tests" / "fake_harness.py")]
BEHAVIOURS = ("pass", "fail", "flaky_infra", "hang", "silent")


def make_matrix(tmp_path: Path, hang_timeout: int = 3) -> spec.Matrix:
    suites = tmp_path / "suites"
    suites.mkdir()
    for b in BEHAVIOURS:
        (suites / f"test_{b}.py").write_text("")
    path = tmp_path / "fake.yaml"
    path.write_text(f"""
axes:
  kernel: [debian:6.12]
  notifier: [on]
  suite: [{", ".join(str(suites / f"test_{b}.py") for b in BEHAVIOURS)}]
include:
  - {{kernel: debian:9.9, notifier: on, machine: default, suite: {suites / "test_pass.py"}}}
timeout: 60
timeouts:
  - {{suite: {suites / "test_hang.py"}, timeout: {hang_timeout}}}
""")
    return spec.load(str(path))


def test_runner(tmp_path: Path):
    m = make_matrix(tmp_path)
    run_dir = tmp_path / "run"
    out = io.StringIO()
    rc = Runner(m, list(m.cells), run_dir, jobs=3, out=out, harness=FAKE).run()
    log = out.getvalue()
    assert rc == 1, log
    cells = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/cell.json")}
    outcome = {cid: c["outcome"] for cid, c in cells.items()}
    assert outcome == {
        "6.12-on-default-pass": "PASS",
        "6.12-on-default-fail": "FAIL",
        "6.12-on-default-flaky_infra": "PASS",  # INFRA once, then retried
        "6.12-on-default-hang": "TIMEOUT",
        "6.12-on-default-silent": "INFRA",  # no results, twice: reported as infrastructure
        "9.9-on-default-pass": "ERROR",  # its kernel did not build
    }, log

    flaky = cells["6.12-on-default-flaky_infra"]
    assert [a["outcome"] for a in flaky["attempts"]] == ["INFRA", "PASS"]
    assert (run_dir / "6.12-on-default-flaky_infra.attempt-1" / "outcomes.json").exists()
    assert [a["outcome"] for a in cells["6.12-on-default-silent"]["attempts"]] == ["INFRA", "INFRA"]
    assert "produced no results" in cells["6.12-on-default-silent"]["reason"]
    assert "3 s timeout" in cells["6.12-on-default-hang"]["reason"]
    assert cells["6.12-on-default-hang"]["duration_s"] < 30
    broken = cells["9.9-on-default-pass"]
    assert broken["reason"].startswith("kernel build failed")
    assert broken["build"]["command"] == "harness kernel --kernel-src debian:9.9 --notifier on"
    assert "mm/oops.c:1: error: boom" in (run_dir / "9.9-on-default-pass" / "build-error.txt").read_text()
    assert cells["6.12-on-default-fail"]["command"].startswith("harness run --kernel-src debian:6.12 --notifier on")

    # At most three cells at once, and more than one at some point.
    running, peak = 0, 0
    events = [line.split() for line in (run_dir / "concurrency.log").read_text().splitlines()]
    for kind, _, _ in sorted(events, key=lambda e: float(e[1])):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert 2 <= peak <= 3

    # Live progress, then the summary and the report.
    assert "done (" in log and "running: " in log and "queued" in log
    assert "reproduce: harness run --kernel-src debian:6.12 --notifier on --machine default" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["totals"]["cell_outcomes"] == {"TIMEOUT": 1, "FAIL": 1, "ERROR": 1, "INFRA": 1, "PASS": 2}
    assert [i["cell"] for i in summary["infra"]] == ["6.12-on-default-silent"]
    assert {f["cell"] for f in summary["failures"]} == {"6.12-on-default-fail", "6.12-on-default-hang",
                                                        "9.9-on-default-pass"}
    assert (run_dir / "report.html").exists() and (run_dir / "junit.xml").exists()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["finished"] and [b["ok"] for b in run["builds"]] == [True, False]


def test_runner_one_cell(tmp_path: Path):
    m = make_matrix(tmp_path)
    cells = m.select(["6.12-on-default-pass"])
    rc = Runner(m, cells, tmp_path / "run", jobs=2, out=io.StringIO(), harness=FAKE).run()
    assert rc == 0
    assert [p.parent.name for p in (tmp_path / "run").glob("*/cell.json")] == ["6.12-on-default-pass"]


def test_interrupted_run(tmp_path: Path):
    """SIGTERM to the runner stops its cells, reports what finished, and marks the run interrupted."""
    m = make_matrix(tmp_path, hang_timeout=60)
    cells = m.select(["6.12-on-default-pass", "6.12-on-default-hang"])
    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    rc = Runner(m, cells, tmp_path / "run", jobs=2, out=io.StringIO(), harness=FAKE).run()
    assert rc == 130
    hang = json.loads((tmp_path / "run" / "6.12-on-default-hang" / "cell.json").read_text())
    assert (hang["outcome"], hang["reason"]) == ("ERROR", "interrupted: the matrix run was stopped")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["interrupted"] is True
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_fragment_is_a_kernel_of_its_own(tmp_path: Path):
    (tmp_path / "test_pass.py").write_text("")
    path = tmp_path / "frag.yaml"
    path.write_text(f"""
axes:
  kernel: [debian:6.12]
  notifier: [on]
  fragment: [none, debug/kasan]
  suite: [{tmp_path / "test_pass.py"}]
""")
    m = spec.load(str(path))
    out = io.StringIO()
    assert Runner(m, list(m.cells), tmp_path / "run", jobs=2, out=out, harness=FAKE).run() == 0
    builds = json.loads((tmp_path / "run" / "run.json").read_text())["builds"]
    assert [(b["notifier"], b["fragment"], b["log"]) for b in builds] == [
        ("on", "", "builds/6.12-on.log"), ("on", "debug/kasan", "builds/6.12-on-kasan.log")]
    assert sorted(p.parent.name for p in (tmp_path / "run").glob("*/cell.json")) == [
        "6.12-on-default-pass", "6.12-on-kasan-default-pass"]


def test_a_cell_that_failed_before_its_verdict_is_judged_by_its_record(tmp_path: Path):
    """The runner reads how a cell's command ended from its ExitRecord (`harness --record`), not from its
    output: a failing machine (kind infra) is INFRA and retried once; bad input (kind user) is ERROR."""
    for b in ("infra_error", "user_error"):
        (tmp_path / f"test_{b}.py").write_text("")
    path = tmp_path / "records.yaml"
    path.write_text(f"""
axes:
  kernel: [debian:6.12]
  notifier: [on]
  suite: [{tmp_path / "test_infra_error.py"}, {tmp_path / "test_user_error.py"}]
""")
    m = spec.load(str(path))
    run_dir = tmp_path / "run"
    assert Runner(m, list(m.cells), run_dir, jobs=2, out=io.StringIO(), harness=FAKE).run() == 1
    cells = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/cell.json")}
    infra, user = cells["6.12-on-default-infra_error"], cells["6.12-on-default-user_error"]
    assert [a["outcome"] for a in infra["attempts"]] == ["INFRA", "INFRA"]
    assert infra["reason"] == "apt-get update of bookworm-backports failed (exit 100): network"
    assert [a["returncode"] for a in infra["attempts"]] == [75, 75]
    assert (user["outcome"], user["reason"]) == ("ERROR", "machine profile 'nope': no such profile")
    assert [a["outcome"] for a in user["attempts"]] == ["ERROR"]
    builds = json.loads((run_dir / "run.json").read_text())["builds"]
    assert (run_dir / builds[0]["log"]).with_suffix(".exit.json").exists()  # the build's own record
