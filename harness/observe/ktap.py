"""Kernel selftest output (KTAP / TAP 13 as kselftest prints it) into per-test results, and the list of
tests a kselftest_harness.h program contains.

A kselftest_harness program (tools/testing/selftests/kselftest_harness.h) names each test
FIXTURE[.VARIANT].TEST, prints `#  RUN  NAME ...`, whatever the test logs, then one result line:

    ok 9 hmm.hmm_device_private.anon_write_hugetlbfs # SKIP Huge page size could not be determined
    not ok 22 hmm.hmm_device_private.exclusive

The result line's directive (SKIP, XFAIL, XPASS after " # ") is kselftest.h:ksft_test_result_code's;
anything else after " # " is a diagnostic. A test's log is every line after the previous result (or the
plan) up to and including its own result line; a result line without a name (6.1 prints skips as
`ok 9 # SKIP reason`) takes the name of the `RUN` line in its log. Output that stops before the plan is met (the program
crashed or was killed) leaves the run incomplete: `missing()` names the tests that never reported.

A test that said `#      SKIP      reason` (kselftest_harness.h's SKIP()) but whose result line is a plain `ok` is a
skip: 6.1's harness loses a skip taken by leaving the test process (hmm-tests.c:136 and :147 in a FIXTURE_SETUP,
`SKIP(exit(0), "DEVICE_COHERENT not available")`): the child exits 0 before __run_test's `if (t->skip)
_exit(255)` (6.1 kselftest_harness.h:1013), so the parent prints `ok N NAME` and counts a pass for a test that
never ran. 6.12's harness reports the same tests as `ok N NAME # SKIP DEVICE_COHERENT not available`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STATUSES = ("pass", "fail", "skip", "xfail", "xpass")

_VERSION = re.compile(r"^\s*(?:TAP|KTAP) version (\S+)")
_PLAN = re.compile(r"^\s*1\.\.(\d+)")
_RESULT = re.compile(r"^(not ok|ok) (\d+)(?: (.*?))?\s*$")
_TOTALS = re.compile(r"^# Totals: (.*)$")
_RUN = re.compile(r"^#\s+RUN\s+(\S+) \.\.\.")
_SKIPPED = re.compile(r"^#\s+SKIP\s+(.*?)\s*$")  # kselftest_harness.h's SKIP(): "#      SKIP      %s"
_DIRECTIVES = {"SKIP": "skip", "XFAIL": "xfail", "XPASS": "xpass", "TODO": "xfail"}


@dataclass(frozen=True)
class TestResult:
    number: int
    name: str
    status: str  # one of STATUSES
    reason: str  # the directive's text (why it was skipped), or the diagnostic; "" if none
    log: str  # this test's lines of output, its result line last


@dataclass
class Run:
    version: str | None = None
    plan: int | None = None
    results: list[TestResult] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)  # "# Totals: pass:23 fail:3 ..." if printed
    tail: str = ""  # output after the last result that belongs to no test

    @property
    def complete(self) -> bool:
        return self.plan is not None and len(self.results) == self.plan

    def by_name(self) -> dict[str, TestResult]:
        return {r.name: r for r in self.results}

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for r in self.results:
            out[r.status] += 1
        return out

    def missing(self, expected: list[str]) -> list[str]:
        seen = self.by_name()
        return [name for name in expected if name not in seen]


def parse_result_line(line: str) -> tuple[str, int, str, str] | None:
    """(status, number, name, reason) of an `ok`/`not ok` line, or None if the line is not one."""
    m = _RESULT.match(line.rstrip("\r\n"))
    if not m:
        return None
    ok, number, rest = m[1] == "ok", int(m[2]), m[3] or ""
    name, sep, after = rest.partition(" #")
    if not sep and rest.startswith("#"):  # "ok 3 # SKIP reason": no name (ksft_test_result_skip)
        name, after = "", rest[1:]
    name, after = name.strip(), after.strip()
    word, _, text = after.partition(" ")
    directive = _DIRECTIVES.get(word.upper()) if ok else None
    if directive:
        return directive, number, name, text.strip()
    return ("pass" if ok else "fail"), number, name, after


def parse(text: str) -> Run:
    run = Run()
    pending: list[str] = []
    for line in text.splitlines():
        if run.version is None and not run.results and (m := _VERSION.match(line)):
            run.version = m[1]
            continue
        if run.plan is None and not run.results and (m := _PLAN.match(line)):
            run.plan = int(m[1])
            continue
        if m := _TOTALS.match(line):
            run.totals = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m[1])}
        parsed = parse_result_line(line) if not line.startswith((" ", "\t")) else None
        if parsed:
            status, number, name, reason = parsed
            if not name:  # "ok 9 # SKIP why" (6.1's ksft_test_result_skip): the test named by its RUN line
                runs = [m[1] for m in map(_RUN.match, pending) if m]
                name = runs[-1] if runs else ""
            if status == "pass" and (said := [m[1] for m in map(_SKIPPED.match, pending) if m]):
                status, reason = "skip", said[-1]  # a skip 6.1's harness reported as ok (see above)
            run.results.append(TestResult(number, name, status, reason, "\n".join([*pending, line]) + "\n"))
            pending = []
        else:
            pending.append(line)
    run.tail = "\n".join(pending) + ("\n" if pending else "")
    return run


# --- which tests a kselftest_harness.h program has -------------------------------------------------

_C_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_FIXTURE = re.compile(r"^\s*FIXTURE\(\s*(\w+)\s*\)", re.MULTILINE)
_VARIANT = re.compile(r"^\s*FIXTURE_VARIANT_ADD\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.MULTILINE)
_TEST_F = re.compile(r"^\s*TEST_F(?:_SIGNAL|_TIMEOUT)?\(\s*(\w+)\s*,\s*(\w+)\s*[,)]", re.MULTILINE)
_TEST = re.compile(r"^\s*TEST(?:_SIGNAL)?\(\s*(\w+)\s*[,)]", re.MULTILINE)


def tests_in_source(source: str) -> list[str]:
    """FIXTURE[.VARIANT].TEST names, in run order, of a selftest written with kselftest_harness.h.

    TEST(name) belongs to the implicit fixture "global". Order: fixtures as declared (global first),
    then each variant as added, then each test as declared: that is the order the harness runs them.
    Tests that macros generate are not seen here; `harness_list` on the program's -l output is exact.
    """
    code = _C_COMMENT.sub("", source)
    fixtures = ["global", *(m[1] for m in _FIXTURE.finditer(code))]
    variants: dict[str, list[str]] = {f: [] for f in fixtures}
    tests: dict[str, list[str]] = {f: [] for f in fixtures}
    for m in _VARIANT.finditer(code):
        variants.setdefault(m[1], []).append(m[2])
    for m in _TEST_F.finditer(code):
        tests.setdefault(m[1], []).append(m[2])
    tests["global"] += [m[1] for m in _TEST.finditer(code)]
    return [f"{fixture}.{variant + '.' if variant else ''}{test}"
            for fixture in tests for variant in (variants.get(fixture) or [""]) for test in tests[fixture]]


def harness_list(text: str) -> list[str]:
    """Test names from a kselftest_harness program's `-l` output (a table printed to stderr):

        # FIXTURE            VARIANT                   TEST
        hmm                  hmm_device_private        open_close
                             hmm_device_coherent       anon_read
    Columns are "%-20s %-25s %s"; a block per fixture, separated by dashed lines; variants and tests
    are listed side by side and each test runs once per variant.
    """
    blocks: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# FIXTURE") or line.startswith("---") or not line.strip():
            if line.startswith("---"):
                blocks.append(("", [], []))
            continue
        if not blocks:
            blocks.append(("", [], []))
        _, variants, tests = blocks[-1]
        cols = [line[:20].strip(), line[21:46].strip(), line[47:].strip()]
        if len(line.split()) == 3 and not all(cols):  # a name wider than its column shifted the rest
            cols = line.split()
        if cols[0]:
            blocks[-1] = (cols[0], variants, tests)
        if cols[1]:
            variants.append(cols[1])
        if cols[2]:
            tests.append(cols[2])
    return [f"{fixture}.{variant + '.' if variant else ''}{test}"
            for fixture, variants, tests in blocks for variant in (variants or [""]) for test in tests]
