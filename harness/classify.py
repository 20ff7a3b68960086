"""One test's pytest report as the harness's outcome (harness/results/outcome.py) and a one-line reason.

The pytest plugin calls `classify` for every test's call (and a setup that did not pass); the terminal
summary takes its short reasons from here too. The order of the checks is the classification: a fault the
harness named (a crash, a timeout, an unreachable guest) first, then a command past its timeout, then a
command whose answer was wrong (the test's verdict), then a lost channel (INFRA), then a plain assertion.
"""

from __future__ import annotations

import errno

import pytest

from harness.results.outcome import SEVERITY, HarnessFault, Outcome
from harness.vm.ssh import CommandFailed, CommandFlooded, CommandTimeout, SSHError


class ResultsLost(HarnessFault):
    """The results directory stopped taking files (a full disk): the run stops at this test."""


def classify(report: pytest.TestReport, call: pytest.CallInfo[None]) -> tuple[Outcome, str]:
    if report.passed:
        return Outcome.PASS, ""
    if report.skipped and hasattr(report, "wasxfail"):  # an expected failure, e.g. a known kernel bug
        return Outcome.XFAIL, report.wasxfail
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return Outcome.SKIP, reason.removeprefix("Skipped: ")
    exc = call.excinfo.value if call.excinfo else None
    first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    if isinstance(exc, HarnessFault):
        return exc.outcome, first_line
    if isinstance(exc, CommandTimeout):
        return Outcome.TIMEOUT, first_line
    if isinstance(exc, CommandFlooded):  # one not seen by harness/vm/faults.py (a fixture's)
        return Outcome.FLOOD, first_line
    if isinstance(exc, CommandFailed):  # the guest answered, and the answer was wrong: the test's verdict
        return (Outcome.FAIL if report.when == "call" else Outcome.ERROR), first_line
    if isinstance(exc, SSHError):
        return Outcome.INFRA, first_line
    if isinstance(exc, (AssertionError, pytest.fail.Exception)):
        return (Outcome.FAIL if report.when == "call" else Outcome.ERROR), first_line
    return Outcome.ERROR, f"{type(exc).__name__}: {first_line}" if exc is not None else "unknown error"


def is_results_lost(exc: BaseException) -> bool:
    return isinstance(exc, ResultsLost) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)



def short_reason(rep: pytest.TestReport) -> str:
    """The first line of why a test did not pass, as pytest reported it."""
    if hasattr(rep, "wasxfail"):
        return first_line_of(rep.wasxfail)
    longrepr = rep.longrepr
    if rep.skipped and isinstance(longrepr, tuple):
        return first_line_of(str(longrepr[2]).removeprefix("Skipped: "))
    crash = getattr(longrepr, "reprcrash", None)
    return first_line_of(crash.message if crash is not None else str(longrepr or ""))


def first_line_of(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


SEVERITY_RANK = {o.value: i for i, o in enumerate(SEVERITY)}
