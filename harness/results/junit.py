"""JUnit XML: the one reader of a run's junit.xml, what is read from it, and the merged writer.

pytest writes a run's junit.xml; the plugin adds each case's outcome as its `outcome` property.
Every reader goes through `read_cases`: an xfail is XFAIL, a case with the property has that
outcome, and a case without it (a suite that failed to import, a run without the plugin) falls back
to its failure, error or skipped tag. From the cases come `harness run`'s summary (`run_summary`)
and `harness driver`'s verdict (`run_verdict`), judged by the one severity order (outcome.worst).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness.atomic import write_text
from harness.results.outcome import SEVERITY, Outcome, worst
from harness.results.rundir import RunDir
from harness.results.visible import visible

PROBLEMS = ("failure", "error")  # the tags of a case that did not pass, in the order a summary lists them
_BY_TAG = {"failure": Outcome.FAIL, "error": Outcome.ERROR, "skipped": Outcome.SKIP}


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    time: float
    outcome: Outcome
    message: str  # why it did not pass (its failure, error or skipped message), "" for a pass
    problems: tuple[tuple[str, str], ...]  # (failure|error, message) of each such tag, failures first
    element: ET.Element = field(compare=False, repr=False)  # as read, for the merged JUnit

    @property
    def nodeid(self) -> str:
        return f"{self.classname}::{self.name}"


def read_cases(path: Path) -> list[Case]:
    """Every finished test case in the file; none when it is missing or not XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    return [_case(e) for e in root.iter("testcase") if _finished(e)]


def _finished(case: ET.Element) -> bool:
    """pytest opens a case at its setup and names it at its call's report: a run stopped in between
    (SIGTERM, Ctrl-C) leaves a nameless <testcase time=...> behind, a test that never ended, not a pass."""
    return bool(case.get("name"))


def drop_unfinished(path: Path) -> None:
    """Rewrite a junit.xml without the nameless cases of tests that a stopped run never finished."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return
    parents = [(suite, case) for suite in tree.getroot().iter() for case in suite if case.tag == "testcase"
               and not _finished(case)]
    for suite, case in parents:
        suite.remove(case)
    if parents:
        write(path, tree.getroot())


def _case(e: ET.Element) -> Case:
    tags = {child.tag: child for child in e}
    skipped = tags.get("skipped")
    xfail = skipped is not None and skipped.get("type") == "pytest.xfail"
    why = skipped if xfail else tags.get("failure", tags.get("error", skipped))
    message = (why.get("message") or "") if why is not None else ""
    problems = tuple((tag, p.get("message") or "") for tag in PROBLEMS for p in e.findall(tag))
    return Case(e.get("classname", ""), e.get("name", ""), float(e.get("time") or 0),
                Outcome.XFAIL if xfail else _outcome(e, why), message, problems, e)


def _outcome(e: ET.Element, why: ET.Element | None) -> Outcome:
    """The plugin's `outcome` property (a CRASH is more than its <failure>), else what the case's tag says."""
    recorded = next((p.get("value") for p in e.iter("property") if p.get("name") == "outcome"), None)
    if recorded:
        return Outcome(recorded)
    return _BY_TAG[why.tag] if why is not None else Outcome.PASS


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# -- what a run came to -------------------------------------------------------------------------------

def run_summary(run_dir: Path) -> str:
    """`harness run`'s closing lines: how many tests ended in each outcome, and where the results are.
    Each test that did not pass is one line of pytest's closing summary just above (the plugin's
    pytest_terminal_summary): not repeated here."""
    junit = RunDir(run_dir).junit
    if not junit.exists():
        return f"no results were written; see {run_dir}"
    cases = read_cases(junit)
    counts = ", ".join(f"{n} {o.lower()}" for o in SEVERITY if (n := sum(c.outcome == o for c in cases)))
    return f"summary: {counts or 'no tests'}\nresults: {run_dir}"


@dataclass(frozen=True)
class Verdict:
    status: str  # the worst outcome among the tests (outcome.worst); NONE when no test at all
    counts: dict[Outcome, int]  # outcome -> number of tests
    notes: list[str]  # one line per test that did not pass: "OUTCOME test: reason"

    def line(self) -> str:
        shown = ", ".join(f"{n} {o.lower()}" for o in SEVERITY if (n := self.counts.get(o)))
        return f"{self.status} ({shown or 'no tests'})"


def run_verdict(run_dir: Path) -> Verdict:
    """`harness driver`'s verdict on a run: the worst outcome of its tests, their counts, and a note for
    each test that neither passed nor skipped (an XFAIL's names its known bug)."""
    junit = RunDir(run_dir).junit
    if not junit.exists():
        return Verdict("NONE", {}, [f"no JUnit XML at {junit}"])
    cases = read_cases(junit)
    counts = {o: n for o in SEVERITY if (n := sum(1 for c in cases if c.outcome == o))}
    notes = [f"{c.outcome} {c.name}: {_first_line(c.message)[:160]}" for c in cases
             if c.outcome not in (Outcome.PASS, Outcome.SKIP)]
    status = worst(c.outcome for c in cases)
    return Verdict(status.value if status else "NONE", counts, notes)


# -- the merged JUnit of a matrix run ------------------------------------------------------------------

@dataclass
class Suite:
    """One <testsuite> of a merged file: a cell, its cases, and its values as properties."""

    name: str
    properties: dict[str, str]
    cases: list[ET.Element] = field(default_factory=list)

    def add_error(self, classname: str, name: str, time: float, message: str, text: str) -> None:
        """A case that stands for a failure no test case carries (a kernel that did not build)."""
        case = ET.Element("testcase", classname=classname, name=name, time=str(time))
        ET.SubElement(case, "error", message=message).text = text
        self.cases.append(case)


def merged(title: str, suites: list[Suite]) -> ET.Element:
    """<testsuites> with one <testsuite> per Suite, each counted as pytest counts its own."""
    root = ET.Element("testsuites", name=title)
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for s in suites:
        suite = ET.SubElement(root, "testsuite", name=s.name)
        props = ET.SubElement(suite, "properties")
        for name, value in s.properties.items():
            ET.SubElement(props, "property", name=name, value=value)
        suite.extend(s.cases)
        counts = {"tests": len(s.cases), "failures": _holding(s.cases, "failure"),
                  "errors": _holding(s.cases, "error"), "skipped": _holding(s.cases, "skipped")}
        for key, n in counts.items():
            suite.set(key, str(n))
            totals[key] += n
        suite.set("time", f"{sum(float(c.get('time') or 0) for c in s.cases):.3f}")
    for key, n in totals.items():
        root.set(key, str(n))
    return root


def _holding(cases: list[ET.Element], tag: str) -> int:
    return sum(1 for c in cases if c.find(tag) is not None)


def write(path: Path, root: ET.Element) -> None:
    """The file, atomically, with every control character that XML 1.0 forbids spelled out (visible.py)."""
    _make_visible(root)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    write_text(path, buf.getvalue().decode())


def _make_visible(root: ET.Element) -> None:
    """Reasons and messages come from guests and tests: one \\x07 in them and no parser reads the file."""
    for e in root.iter():
        for key, value in e.attrib.items():
            e.set(key, visible(value))
        e.text = visible(e.text) if e.text else e.text
        e.tail = visible(e.tail) if e.tail else e.tail
