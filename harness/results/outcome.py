"""How a test or a matrix cell ended: exactly one outcome, a one-line reason, and where the logs are.

PASS, FAIL and SKIP are the test's own verdicts. The others are about the run:
  ERROR    the harness itself failed (a bug or bad input)
  TIMEOUT  a boot, command or test deadline passed
  CRASH    the kernel panicked / oopsed / hit BUG, or QEMU died
  INFRA    the guest was never reachable (boot never started, SSH unreachable): not a regression
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    CRASH = "CRASH"
    INFRA = "INFRA"


class HarnessFault(Exception):
    """An exception that carries its own classification (raised by fixtures and watchdogs)."""

    outcome = Outcome.ERROR

    def __init__(self, reason: str, console_log: Path | None = None):
        super().__init__(reason if console_log is None else f"{reason}\n  console log: {console_log}")
        self.reason = reason
        self.console_log = console_log


class GuestCrash(HarnessFault):
    outcome = Outcome.CRASH


class GuestTimeout(HarnessFault):
    outcome = Outcome.TIMEOUT


class GuestUnreachable(HarnessFault):
    outcome = Outcome.INFRA


@dataclass
class Result:
    test: str
    outcome: Outcome
    reason: str = ""
    duration_s: float = 0.0
    console_log: str | None = None
    dmesg: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


def write_results(path: Path, results: list[Result]) -> None:
    from harness.atomic import write_text

    write_text(path, json.dumps([r.to_json() for r in results], indent=1) + "\n")
