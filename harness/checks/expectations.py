"""Expected notifier events per guest workload (configs/expectations/events.yaml), and the check of
what a subscriber saw against them.

The expectations are data read from the kernel's mm/ (each names its call site); this module only
selects the ones for the kernel version under test and compares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import paths
from harness.errors import UserError
from harness.results.events import OBSERVERS, Event, related
from harness.results.events import invalidations as invalidations  # the suites name it through here

EXPECTATIONS = paths.CONFIGS / "expectations" / "events.yaml"
RELATIONS = ("equal", "covers", "within", "page")
NEEDS = {"swap", "ksm", "numa", "writeback_fs"}


class ExpectationError(UserError):
    """The expectations file is malformed."""


@dataclass(frozen=True)
class Expectation:
    event: str
    range: str
    relation: str
    site: str
    count: int | str | None = None  # exact count, or "pages": one per page of the range
    min: int | None = None
    observer: str = "mn"
    why: str = ""

    def describe(self) -> str:
        n = f"{self.count}" if self.count is not None else f">= {self.min}"
        return f"{n} x {self.event} {self.relation} '{self.range}' ({self.observer}; {self.site})"


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    expect: tuple[Expectation, ...]
    only: bool = False
    needs: tuple[str, ...] = ()
    why: str = ""
    basis: str = ""  # the kernel version whose source these expectations were read from
    since: str = ""  # the first series whose kernel has what the program uses
    feature: str = ""  # what that is, for the skip message
    deterministic: bool = True  # the kernel gives the same events every run (not KSM, not compaction)

    def unavailable(self, series: str) -> str:
        """Why this case cannot run on `series` (it predates `since`), or "" if it can."""
        if not self.since or not series or _series_key(series) >= _series_key(self.since):
            return ""
        return f"{self.name}: Linux {series} has no {self.feature} (since {self.since})"


@dataclass
class Outcome:
    """The check of one case: failures (empty if it passed) and which events each expectation matched."""

    failures: list[str] = field(default_factory=list)
    matched: dict[Expectation, list[Event]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def load(series: str, path: Path = EXPECTATIONS) -> dict[str, Case]:
    """The cases for kernel series `series` (e.g. "6.12"): per-version entries replace `expect`."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ExpectationError(f"{path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ExpectationError(f"{path}: expected a mapping with 'source' and 'cases'")
    default_basis = str(data.get("source", ""))
    return {name: _case(name, spec, series, default_basis, path) for name, spec in data["cases"].items()}


def _case(name: str, spec: dict, series: str, default_basis: str, path: Path) -> Case:
    where = f"{path}: case {name}"
    if not isinstance(spec, dict) or not spec.get("run"):
        raise ExpectationError(f"{where}: needs 'run' (the guest program and its arguments)")
    unknown = set(spec) - {"run", "expect", "only", "needs", "why", "versions", "since", "source", "deterministic"}
    if unknown:
        raise ExpectationError(f"{where}: unknown key(s) {sorted(unknown)}")
    chosen, basis = spec, str(spec.get("source", default_basis))  # a case may be read from a newer tree
    override = (spec.get("versions") or {}).get(series)
    if override is not None:
        chosen, basis = {**spec, **override}, series
    since = spec.get("since") or {}
    if since and not (isinstance(since, dict) and set(since) == {"version", "feature"}
                      and isinstance(since["version"], str) and re.fullmatch(r"\d+\.\d+", since["version"])):
        raise ExpectationError(f"{where}: since needs 'version' (a quoted \"X.Y\") and 'feature' "
                               "(what older kernels lack)")
    needs = tuple(spec.get("needs") or ())
    if bad := set(needs) - NEEDS:
        raise ExpectationError(f"{where}: unknown need(s) {sorted(bad)}; known: {sorted(NEEDS)}")
    return Case(name=name, argv=tuple(str(a) for a in spec["run"]),
                expect=tuple(_expectation(e, where) for e in chosen.get("expect") or ()),
                only=bool(spec.get("only", False)), needs=needs, why=str(chosen.get("why", "")), basis=basis,
                since=str(since.get("version", "")), feature=str(since.get("feature", "")),
                deterministic=bool(spec.get("deterministic", True)))


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))


def _expectation(spec: dict, where: str) -> Expectation:
    try:
        exp = Expectation(**spec)
    except TypeError as e:
        raise ExpectationError(f"{where}: {e}") from None
    if exp.relation not in RELATIONS:
        raise ExpectationError(f"{where}: relation {exp.relation!r} is not one of {RELATIONS}")
    if exp.observer not in OBSERVERS:
        raise ExpectationError(f"{where}: observer {exp.observer!r} is not one of {sorted(OBSERVERS)}")
    if (exp.count is None) == (exp.min is None):
        raise ExpectationError(f"{where}: {exp.event} on {exp.range}: give exactly one of count and min")
    if isinstance(exp.count, str) and exp.count != "pages":
        raise ExpectationError(f"{where}: count {exp.count!r} must be an integer or 'pages'")
    return exp


def check(case: Case, events: list[Event], info: dict) -> Outcome:
    """Compare one run's events (one pid) with the case; info is the program's JSON summary."""
    out = Outcome()
    ranges = {name: (int(r[0]), int(r[1])) for name, r in info.get("ranges", {}).items()}
    page_size = int(info["page_size"])
    invals = invalidations(events)
    for exp in case.expect:
        if exp.range not in ranges:
            out.failures.append(f"{exp.describe()}: the program printed no range '{exp.range}' "
                                f"(it printed {sorted(ranges)})")
            continue
        start, end = ranges[exp.range]
        matched = [e for e in invals if e.sub == exp.observer and e.event == exp.event
                   and related(e, start, end, exp.relation, page_size)]
        out.matched[exp] = matched
        want = (end - start) // page_size if exp.count == "pages" else exp.count
        if (want is not None and len(matched) != want) or (exp.min is not None and len(matched) < exp.min):
            out.failures.append(
                f"expected {exp.describe()} = [{start:#x}, {end:#x}), saw {len(matched)}"
                + (f" (wanted {want})" if exp.count == "pages" else "")
                + f"\n  events touching it: {_show(_touching(invals, start, end))}")
    if case.only:
        accounted = {id(e) for evs in out.matched.values() for e in evs}
        for name, (start, end) in ranges.items():
            for e in _touching(invals, start, end):
                if id(e) not in accounted:
                    accounted.add(id(e))  # reported once, under the first range it touches
                    out.failures.append(f"unexpected {e.sub} {e.event} [{e.start:#x}, {e.end:#x}) touching "
                                        f"'{name}' [{start:#x}, {end:#x}) (seq {e.seq}, caused by pid {e.cpid})")
    return out


def _touching(events: list[Event], start: int, end: int) -> list[Event]:
    return [e for e in events if e.start < end and start < e.end]


def _show(events: list[Event]) -> str:
    if not events:
        return "none"
    return "; ".join(f"{e.sub} {e.event} [{e.start:#x}, {e.end:#x})" for e in events[:8]) + (
        f"; and {len(events) - 8} more" if len(events) > 8 else "")
