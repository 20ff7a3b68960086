"""How a test or a matrix cell ended: exactly one outcome, and the one order that ranks them.

PASS, FAIL and SKIP are the test's own verdicts; XFAIL is a failure the suite expected (a known
kernel bug, named with its reason). The others are about the run:
  ERROR    the harness itself failed (a bug or bad input)
  TIMEOUT  a boot, command or test deadline passed
  CRASH    the kernel panicked / oopsed / hit BUG, or QEMU died
  FLOOD    the guest sent more than the host takes (a command's output, the console, a frame of the
           command channel: harness/vm/limits.py); what it was doing is unknown
  INFRA    the guest was never reachable (boot never started, SSH unreachable): not a regression
  FLAKY    the test failed, then passed when run again on a fresh guest (`--reruns`, default once): reported
           on its own, never as a pass, and not as a failure (the nightly keeps a history of them)

SEVERITY is the only ranking of outcomes in the harness: `harness run`, `harness driver`,
`harness report` and the matrix all judge a cell or a run by `worst()` of its tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    XFAIL = "XFAIL"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    CRASH = "CRASH"
    FLOOD = "FLOOD"
    INFRA = "INFRA"
    FLAKY = "FLAKY"


# Worst first. A real FAIL outranks INFRA: INFRA says the guest was never reachable, which is not a
# regression, so it must not hide one. Among the green ones a PASS outranks an XFAIL and a SKIP.
# A FLOOD is the guest's doing, like a TIMEOUT: a failure, never hidden as INFRA. FLAKY sits below every
# failure and above PASS: a cell of passes and one flake is FLAKY, a cell with a failure is the failure's.
SEVERITY = (Outcome.CRASH, Outcome.TIMEOUT, Outcome.FLOOD, Outcome.FAIL, Outcome.ERROR, Outcome.INFRA,
            Outcome.FLAKY, Outcome.PASS, Outcome.XFAIL, Outcome.SKIP)
FAILED = frozenset({Outcome.CRASH, Outcome.TIMEOUT, Outcome.FLOOD, Outcome.FAIL, Outcome.ERROR})  # INFRA apart
GREEN = frozenset({Outcome.PASS, Outcome.XFAIL, Outcome.SKIP})


def worst(outcomes: Iterable[Outcome]) -> Outcome | None:
    """The outcome of a cell or run from its tests' outcomes; None when there are none.

    An XFAIL test ran and failed as expected, so a cell of XFAILs and SKIPs is a PASS: SKIP only when
    nothing ran. XFAIL stays a test's outcome, counted apart, never a cell's.
    """
    found = min(outcomes, key=SEVERITY.index, default=None)
    return Outcome.PASS if found == Outcome.XFAIL else found


class HarnessFault(Exception):
    """An exception that carries its own classification (raised by fixtures and watchdogs)."""

    outcome = Outcome.ERROR

    def __init__(self, reason: str, console_log: Path | None = None):
        super().__init__(reason if console_log is None else f"{reason}\n  console log: {console_log}")
        self.reason = reason
        self.console_log = console_log
        self.post_mortem: dict[str, str] = {}  # what a wedged guest left before it was stopped (vm/faults.py)


class GuestCrash(HarnessFault):
    outcome = Outcome.CRASH


class GuestTimeout(HarnessFault):
    outcome = Outcome.TIMEOUT


class GuestUnreachable(HarnessFault):
    outcome = Outcome.INFRA


class GuestFlooded(HarnessFault):
    """The guest sent more than a limit of harness/vm/limits.py: its reason starts "the guest flooded"."""

    outcome = Outcome.FLOOD
