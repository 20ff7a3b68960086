"""Expected notifier events per guest workload (configs/expectations/events.yaml), and the check of
what a subscriber saw against them.

The expectations are data read from the kernel's mm/ (each names its call site); this module only
selects the ones for the kernel version under test and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import paths, schema
from harness.checks.workloads import setup_names
from harness.errors import UserError
from harness.results.events import OBSERVERS, Event, related
from harness.results.events import invalidations as invalidations  # the suites name it through here

EXPECTATIONS = paths.CONFIGS / "expectations" / "events.yaml"
RELATIONS = ("equal", "covers", "within", "page")


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


_SERIES = schema.Str(r"\d+\.\d+", 'a kernel series "X.Y" (quoted)')
EXPECTATION = schema.Record({
    "event": schema.required(schema.Str(r"[A-Z_]+", "an event name without MMU_NOTIFY_ (CLEAR)"),
                             "the kernel's enum mmu_notifier_event name"),
    "range": schema.required(schema.Str(), "a range the program printed"),
    "relation": schema.required(schema.Enum(RELATIONS), "equal, covers, within (it), page (one page, inside)"),
    "site": schema.required(schema.Str(), "the mm/ function that sends it (file:function)"),
    "count": schema.optional(schema.Either((schema.Int(min=0), schema.Enum(("pages",)))), None,
                             "how many: an integer, or pages (one per page of the range)"),
    "min": schema.optional(schema.Int(min=0), None, "at least this many (instead of count)"),
    "observer": schema.optional(schema.Enum(tuple(OBSERVERS)), "mn",
                                "mn: the classic notifier's start; itv: the interval notifier's invalidate"),
    "why": schema.optional(schema.Str(), "", "the call chain, read from the kernel's source"),
}, "an expectation", extra_checks=(lambda e, at: _one_of_count_and_min(e, at),))
_EXPECT = schema.ListOf(EXPECTATION)
CASE = schema.Record({
    "run": schema.required(schema.ListOf(schema.Str(), one_or_more=True), "/guest/bin/NAME and its arguments"),
    "expect": schema.optional(_EXPECT, [], "the invalidations it must cause (source's kernel)"),
    "only": schema.optional(schema.Bool(), False, "no other invalidation may touch a range the program printed"),
    "needs": schema.optional(schema.ListOf(schema.Enum(setup_names, "a guest setup of harness/checks/workloads.py:")),
                             [], "what the guest must provide first"),
    "why": schema.optional(schema.Str(), "", "why the kernel sends these (or none)"),
    "versions": schema.optional(schema.MapOf(_SERIES, schema.Record({
        "expect": schema.optional(_EXPECT, None, "replaces the case's expect on that series"),
        "why": schema.optional(schema.Str(), None, "replaces the case's why"),
    }, "a series' own expectations")), {}, "per series, where its mm/ differs"),
    "since": schema.optional(schema.Record({
        "version": schema.required(_SERIES, "the first series that has it"),
        "feature": schema.required(schema.Str(), "what older kernels lack (the skip says it)"),
    }, "a since condition"), None, "the program uses what kernels before it lack: skipped there"),
    "source": schema.optional(_SERIES, None, "the series whose mm/ `expect` was read from (default: the file's)"),
    "deterministic": schema.optional(schema.Bool(), True, "the same events every run (not KSM, not compaction)"),
}, "a case")
FILE = schema.Record({
    "source": schema.required(_SERIES, "the series whose mm/ the expectations were read from"),
    "cases": schema.required(schema.MapOf(schema.Str(r"[\w.-]+(/[\w.-]+)*", "a case name (group/name)"), CASE),
                             "the cases by name"),
}, "an expectations file")


def _one_of_count_and_min(exp: dict, at: schema.KeyPath) -> None:
    if (exp["count"] is None) == (exp["min"] is None):
        raise schema.Invalid(at, f"{exp['event']} on {exp['range']}: give exactly one of count and min")


def load(series: str, path: Path = EXPECTATIONS) -> dict[str, Case]:
    """The cases for kernel series `series` (e.g. "6.12"): per-version entries replace `expect`."""
    data = schema.load(path, FILE, ExpectationError).data
    return {name: _case(name, spec, series, data["source"]) for name, spec in data["cases"].items()}


def _case(name: str, spec: dict, series: str, default_basis: str) -> Case:
    expect, why, basis = spec["expect"], spec["why"], spec["source"] or default_basis
    override = spec["versions"].get(series)
    if override is not None:
        expect = override["expect"] if override["expect"] is not None else expect
        why = override["why"] if override["why"] is not None else why
        basis = series
    since = spec["since"] or {}
    return Case(name=name, argv=tuple(spec["run"]), expect=tuple(Expectation(**e) for e in expect),
                only=spec["only"], needs=tuple(spec["needs"]), why=why, basis=basis,
                since=since.get("version", ""), feature=since.get("feature", ""),
                deterministic=spec["deterministic"])


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))




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
