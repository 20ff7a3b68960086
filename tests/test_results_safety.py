"""What a guest or a test can put into a reason or a name must not break the files that report it:
control characters in JUnit XML, HTML, JSON and the terminal, `$` and `\\` in plot labels, and a run
stopped by SIGTERM in the middle of a test (harness/results/visible.py, junit.py, plots.py)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.matrix.spec import Cell
from harness.results import compare, junit, load, plots, report, rundir
from harness.results.model import RunRecord, read_results
from harness.results.outcome import Outcome
from harness.results.rundir import RUN_JSON
from harness.results.summary import format_summary
from harness.results.visible import visible
from tests.test_report import EVENTS, make_cell
from tests.test_results_model import plugin_run

CONTROLS = "".join(chr(c) for c in range(0x20)) + "\x7f"
# What XML 1.0, an HTML page and a terminal must never receive raw (tab, newline and CR are text).
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CELL = Cell("debian:6.12", "on", "default", EVENTS)
BROKEN = Cell("debian:6.1", "on", "default", EVENTS)


def test_visible_spells_out_each_control_character():
    assert visible("a\x00b\x07c\x1bd\x7fe") == "a\\x00b\\x07c\\x1bd\\x7fe"
    assert visible("tab\tnewline\ncr\r") == "tab\tnewline\ncr\r"  # allowed in XML, JSON and HTML alike
    assert visible("\x85 \ud800 \uffff") == "\\x85 \\ud800 \\uffff"
    assert visible("plain → text, ü") == "plain → text, ü"


def _matrix_with_reason(run: Path, reason: str) -> Path:
    """Two cells: one whose test failed with `reason`, one that failed without a test (its (cell) case)."""
    run.mkdir(parents=True)
    RunRecord("fab", started="t0", finished="t1", duration_s=9, cells=[CELL.id, BROKEN.id]).write(run / RUN_JSON)
    make_cell(run, CELL, {"test_munmap": ("FAIL", 0.4)})
    make_cell(run, BROKEN, {}, outcome="ERROR", reason=reason, build_error="harness: kernel build failed")
    return run


def test_a_reason_with_control_characters_keeps_the_merged_junit_parseable(tmp_path: Path):
    reason = f"guest said [{CONTROLS}] then stopped"
    run = _matrix_with_reason(tmp_path / "r", reason)
    summary = report.write_report(run)
    root = ET.parse(run / "junit.xml").getroot()  # one raw \x07 and this raises ParseError
    (case,) = root.find(f"testsuite[@name='{BROKEN.id}']").findall("testcase")
    message = case.find("error").get("message")
    assert message == f"ERROR: {visible(reason)}"
    for shown in ("\\x00", "\\x07", "\\x1b", "\\x1f", "\\x7f"):
        assert shown in message, shown
    assert "\t" in message and "\n" in message  # kept as they were: XML carries them
    assert not FORBIDDEN.search(case.find("error").text)
    # The other writers: JSON keeps the reason exactly; the page and the terminal show it spelled out.
    assert json.loads((run / "summary.json").read_text())["cells"][1]["reason"] == reason
    page = (run / "report.html").read_text()
    assert not FORBIDDEN.search(page) and "\\x07" in page
    printed = format_summary(summary)
    assert not FORBIDDEN.search(printed) and "guest said [\\x00" in printed


def test_junit_write_spells_out_control_characters_in_every_attribute_and_text(tmp_path: Path):
    suite = junit.Suite("cell\x01", {"reproducer": f"harness run {CONTROLS}"})
    suite.add_error("cell", "(cell)", 1.0, f"ERROR: {CONTROLS}", f"trace {CONTROLS}")
    junit.write(tmp_path / "junit.xml", junit.merged("matrix \x1b[31mred", [suite]))
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.get("name") == "matrix \\x1b[31mred"
    assert root.find("testsuite").get("name") == "cell\\x01"
    assert root.find(".//property").get("value") == f"harness run {visible(CONTROLS)}"
    # In element text a CR is read back as a newline: XML's own line-end normalisation, not ours.
    assert root.find(".//error").text == f"trace {visible(CONTROLS)}".replace("\r", "\n")
    (case,) = junit.read_cases(tmp_path / "junit.xml")
    assert case.problems == (("error", f"ERROR: {visible(CONTROLS)}"),)


def test_plot_labels_with_dollars_and_backslashes_render(tmp_path: Path):
    """Test parameters and event names are labels: `$x$`, a lone `$`, `\\` and a malformed formula
    (which stopped the whole report when matplotlib read it as mathtext) all render."""
    run = tmp_path / "r"
    run.mkdir()
    RunRecord("fab", cells=[CELL.id]).write(run / RUN_JSON)
    names = ["test_w[$x$]", "test_w[$]", "test_w[\\]", "test_w[a$\\b$c]", "test_w[$\\frac$]"]
    make_cell(run, CELL, {n: ("PASS", 0.1) for n in names},
              events={n: ["UNMAP", "$\\sqrt$", "CLEAR"] for n in names})
    images = plots.plot_images(load.load_run(run))
    assert images is not None, "matplotlib is a dependency of the harness (pyproject.toml)"
    assert [title for title, _ in images] == [plots.EVENTS_TITLE, plots.TIMES_TITLE]
    assert all(png is not None and png.startswith(b"\x89PNG") for _, png in images)
    report.write_report(run)
    assert len(re.findall(r"src='data:image/png;base64,", (run / "report.html").read_text())) == 2


STOPPED = '''
import os
import signal
import time


def test_first(run_dir):
    pass


def test_stopped(run_dir):
    os.kill(os.getpid(), signal.SIGTERM)  # as the matrix runner stops a cell past its timeout
    time.sleep(60)


def test_never_reached(run_dir):
    pass
'''


def test_a_run_stopped_by_sigterm_leaves_no_nameless_junit_case(tmp_path: Path):
    """pytest opens a JUnit case at a test's setup and names it at its call: SIGTERM in between used to
    leave a `<testcase time=...>` without a name, which every reader counted as one more pass."""
    run_dir, proc = plugin_run(tmp_path, STOPPED)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pytest: interrupted
    d = rundir.RunDir(run_dir)
    cases = ET.parse(d.junit).getroot().findall(".//testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [("test_suite", "test_first")]
    assert [c.nodeid for c in junit.read_cases(d.junit)] == ["test_suite::test_first"]
    assert junit.run_summary(run_dir).splitlines()[0] == "summary: 1 pass"
    assert [r.test for r in read_results(d.outcomes)] == ["test_suite.py::test_first"]


def test_a_nameless_case_is_not_read_as_a_test(tmp_path: Path):
    path = tmp_path / "junit.xml"
    path.write_text('<testsuites><testsuite name="pytest" tests="1"><testcase classname="m" name="test_a" '
                    'time="0.1"/><testcase time="3.0"/></testsuite></testsuites>')
    assert [c.nodeid for c in junit.read_cases(path)] == ["m::test_a"]
    junit.drop_unfinished(path)
    assert [c.get("name") for c in ET.parse(path).getroot().iter("testcase")] == ["test_a"]


def test_harness_compare_reports_spell_out_control_characters_and_keep_their_code_block():
    reason = f"guest said [{CONTROLS}]\n```\n<script>x</script> and ````"
    c = compare.Comparison("base", "patched", [compare.OutcomeChange("t::test_x", Outcome.PASS, Outcome.FAIL,
                                                                      reason, "regressed")])
    text = compare.render_text(c)
    assert not FORBIDDEN.search(text) and "guest said [\\x00\\x01" in text
    md = compare.render_markdown(c)
    assert md.startswith("# harness compare\n\n`````\n") and md.endswith("`````\n")
    assert md.count("`````") == 2  # the reason's own ```` stays inside the block
