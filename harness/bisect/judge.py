"""What a bisection asks of each commit: a check over the run directories of its build, judged good, bad,
or unknown (skip), with the reason in a line.

    test           a test of the chosen suites (-k) does not pass: FAIL, CRASH, TIMEOUT, FLOOD, ERROR
    events CASE    the notifier events of a workload matching CASE ("munmap/*") differ from the good
                   commit's, by `harness compare`'s rules (harness/results/compare.py): counted where the
                   kernel makes the case deterministic, as sets of kinds where it does not
    completeness   a completeness check (a page that moved without an invalidation) fails
    splat REGEX    a kernel splat whose title matches REGEX is on a console of the run

A commit whose guest never booted, or whose run gave the check nothing to read (the workload did not run),
is skipped: its verdict is unknown, never guessed. A splat check is the exception: the splat it looks for
may be what stopped the boot.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.results import compare
from harness.results.model import Result, Timings, read_results
from harness.results.outcome import FAILED, Outcome
from harness.results.rundir import RunDir
from harness.results.splat import find_splats

KINDS = ("test", "events", "completeness", "splat")
GOOD, BAD, SKIP = "good", "bad", "skip"


@dataclass(frozen=True)
class Check:
    kind: str
    pattern: str = ""  # events: a glob of workload/case names; splat: a regular expression of the title

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown bisect check {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind in ("events", "splat") and not self.pattern:
            raise UserError(f"the {self.kind} check needs a pattern")
        if self.kind == "splat":
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise UserError(f"--splat {self.pattern!r} is not a regular expression: {e}") from None

    @property
    def needs_reference(self) -> bool:
        """Judged against the good commit's runs (compare's rules) rather than alone."""
        return self.kind in ("events", "completeness")

    def describe(self) -> str:
        return {"test": "a test that does not pass",
                "events": f"notifier events of {self.pattern} that differ from the good commit's",
                "completeness": "a completeness check that fails",
                "splat": f"a kernel splat titled /{self.pattern}/"}[self.kind]

    def argv(self) -> list[str]:
        """This check as `harness bisect` options (the reproducing command)."""
        return {"test": [], "events": ["--events", self.pattern], "completeness": ["--completeness"],
                "splat": ["--splat", self.pattern]}[self.kind]


@dataclass(frozen=True)
class Verdict:
    term: str  # good | bad | skip
    reason: str


def judge(check: Check, run: Path, reference: Path | None, cases: Mapping[str, compare.EventCase]) -> Verdict:
    """The verdict of one run directory; `reference` is the good commit's run (events, completeness)."""
    if check.kind == "splat":
        titles = sorted({s.title for log in RunDir(run).console_logs() for s in find_splats(log.read_text(
            errors="replace"))})
        if hit := next((t for t in titles if re.search(check.pattern, t)), None):
            return Verdict(BAD, f"splat: {hit}")
    if not_booted := _not_booted(run):
        return Verdict(SKIP, f"did not boot: {not_booted}")
    results = _read(run)
    if not results:
        return Verdict(SKIP, "no test ran (pytest collected nothing, or the run stopped before its tests)")
    if check.kind == "splat":
        return Verdict(GOOD, f"no splat titled /{check.pattern}/ in {len(results)} test(s)")
    if check.kind == "test":
        failed = [r for r in results if r.outcome in FAILED]
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            first = failed[0]
            said = compare.details(first.test, [run], most=1) or (first.reason.splitlines()[0] if first.reason else "",)
            return Verdict(BAD, f"{first.outcome.value} {first.test}: {said[0]}{more}"[:400])
        if all(r.outcome == Outcome.INFRA for r in results):
            return Verdict(SKIP, f"the guest was unreachable: {results[0].reason}"[:400])
        return Verdict(GOOD, f"{len(results)} test(s) passed")
    assert reference is not None
    diff = compare.compare("good", "this", [reference], [run], cases)
    if check.kind == "completeness":
        if diff.completeness.get("patched"):
            return Verdict(BAD, diff.completeness["patched"][0].splitlines()[0])
        if not diff.completeness_ran[1]:
            return Verdict(SKIP, "no completeness check ran (select one: suites/test_migration.py, "
                                 "-k invalidates_every_page)")
        return Verdict(GOOD, f"{diff.completeness_ran[1]} completeness check(s) passed")
    changes = [e for e in diff.events if fnmatch.fnmatchcase(e.case, check.pattern)]
    if changes:
        return Verdict(BAD, changes[0].line() + (f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""))
    compared = _cases(run) & _cases(reference)
    if not any(fnmatch.fnmatchcase(c, check.pattern) for c in compared):
        return Verdict(SKIP, f"no workload of {check.pattern} ran on both this and the good commit")
    return Verdict(GOOD, f"events of {sum(fnmatch.fnmatchcase(c, check.pattern) for c in compared)} "
                         f"case(s) of {check.pattern} as at the good commit")


def combined(verdicts: list[Verdict]) -> Verdict:
    """One commit's verdict from its runs' (1 + retries): runs that disagree make it FLAKY, a skip that says so;
    a run that did not boot decides nothing (the others decide), and all skipped is the first skip."""
    decided = [v for v in verdicts if v.term != SKIP]
    if len({v.term for v in decided}) > 1:
        tally = ", ".join(v.term for v in verdicts)
        return Verdict(SKIP, f"FLAKY: {tally} in {len(verdicts)} runs of the same build")
    return (decided or verdicts)[0]


def boot_s(run: Path) -> float:
    """Boot to SSH of the run's first guest (0 when none booted)."""
    boots = Timings.read(RunDir(run).timings_json).boots
    return float(boots[0].boot_to_ssh_s or 0.0) if boots else 0.0


def _read(run: Path) -> list[Result]:
    path = RunDir(run).outcomes
    return read_results(path) if path.exists() else []


def _not_booted(run: Path) -> str:
    """Why no guest of the run booted, or "" when one did (or no test asked for one)."""
    if Timings.read(RunDir(run).timings_json).boots:
        return ""
    reasons = [r for r in _read(run) if r.outcome not in (Outcome.PASS, Outcome.SKIP, Outcome.XFAIL)]
    return f"{reasons[0].outcome.value}: {reasons[0].reason}"[:400] if reasons else ""


def _cases(run: Path) -> set[str]:
    """The workload/case names whose events the run saved (what compare reads)."""
    found = set()
    for test_dir in (run / "tests").glob("*"):
        if (test_dir / "events.json").exists() and (test_dir / "program.json").exists():
            info = json.loads((test_dir / "program.json").read_text())
            found.add(f"{info.get('workload', '?')}/{info.get('case', '?')}")
    return found
