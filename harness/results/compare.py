"""What a patch series changes: two sets of run directories (base and patched kernel) compared.

Four things are compared, each from what the runs wrote (harness/results/rundir.py):
  - outcomes, test by test (outcomes.json): regressions, fixes, other changes;
  - kernel splats, by title, over every console log of each side;
  - notifier events of every test that saved a workload's events.json and program.json: each
    invalidation is placed by its relation to the program's named ranges (equal, covers, within,
    overlaps, or elsewhere), and the events of each (observer, range, relation) group are counted.
    The call site is the one configs/expectations/events.yaml names for that group on the base's
    series. Deterministic workloads are compared count for count; those the kernel does not make
    deterministic (`deterministic: false`: KSM, compaction) and events outside the program's ranges
    are compared as sets of event kinds, and the report says which;
  - the completeness checks (tests named *invalidates_every_page*: every page that moved was invalidated).

The verdict is an exit status: 0 nothing changed, 1 a regression (a test that now fails, a new
splat, a completeness check that fails, an event change the --expect-events file does not allow, or
an intended change that did not happen), 3 only events changed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness import schema
from harness.errors import UserError
from harness.results.events import Event, invalidations, related
from harness.results.model import Result, read_results
from harness.results.outcome import FAILED, Outcome
from harness.results.rundir import RunDir
from harness.results.splat import find_splats
from harness.results.visible import visible

EXIT_SAME, EXIT_REGRESSED, EXIT_EVENTS = 0, 1, 3
COMPLETENESS = "invalidates_every_page"  # in the names of the completeness tests
CHECKS_JSON = "checks.json"  # a test's problems by kind: expectations (events), contract, extra
DEVICE_JSON = "device.json"  # a device workload's counters (write_device_counters)
ELSEWHERE = "-"  # the range of an event that touches none of the program's ranges


class ExpectEventsError(UserError):
    pass


class SiteRule(Protocol):
    """What the comparison reads of one expectation (checks/expectations.py's Expectation): its call site."""

    @property
    def observer(self) -> str: ...
    @property
    def range(self) -> str: ...
    @property
    def relation(self) -> str: ...
    @property
    def site(self) -> str: ...


class EventCase(Protocol):
    """What the comparison reads of a workload's expectations (checks/expectations.py's Case), passed in by
    the caller so that results does not depend on checks."""

    @property
    def deterministic(self) -> bool: ...
    @property
    def expect(self) -> Sequence[SiteRule]: ...


@dataclass(frozen=True)
class Group:
    """Where an invalidation fell: its observer (mn, itv), the program's range, and how it relates to it."""

    observer: str
    range: str
    relation: str  # equal | covers | within | page | overlaps | elsewhere

    def describe(self) -> str:
        return "outside the program's ranges" if self.range == ELSEWHERE else f"'{self.range}' ({self.relation})"


@dataclass(frozen=True)
class EventChange:
    test: str
    case: str  # the workload, as events.yaml names it ("mprotect/rw-ro")
    group: Group
    before: dict[str, int]  # event kind -> count
    after: dict[str, int]
    site: str  # the call site events.yaml gives this group, or ""
    exact: bool  # compared count for count (else as sets of kinds)
    intended: bool | None = None  # with --expect-events: allowed by it

    def line(self) -> str:
        def side(c: dict[str, int]) -> str:
            if not c:
                return "nothing"
            return ", ".join(f"{k} x{n}" if self.exact else k for k, n in sorted(c.items()))
        where = f" ({self.site})" if self.site else ""
        how = "" if self.exact else " [as sets: not deterministic]"
        mark = {True: " [intended]", False: " [NOT INTENDED]", None: ""}[self.intended]
        return f"{self.case}: {side(self.before)} → {side(self.after)} on {self.group.describe()}{where}{how}{mark}"

    def vanished(self) -> set[str]:
        return {k for k, n in self.before.items() if self.after.get(k, 0) < n}

    def appeared(self) -> set[str]:
        return {k for k, n in self.after.items() if self.before.get(k, 0) < n}


@dataclass(frozen=True)
class OutcomeChange:
    test: str
    before: Outcome | None  # None: the test did not exist on that side
    after: Outcome | None
    reason: str  # the patched side's reason (or the base's, for a fix)
    kind: str  # regressed | events | fixed | changed
    details: tuple[str, ...] = ()  # the patched side's problems, from the test's checks.json

    def line(self) -> str:
        b, a = (o.value if o else "absent" for o in (self.before, self.after))
        tail = f": {self.reason}" if self.reason and not self.details else ""
        return "\n      ".join([f"{b} → {a}  {self.test}{tail}", *self.details])


@dataclass(frozen=True)
class ExpectedChange:
    """One entry of an --expect-events file: workloads matching `case` may trade `from` for `to`."""

    case: str
    vanish: str | None
    appear: str | None

    def allows(self, change: EventChange) -> bool:
        return (fnmatch.fnmatchcase(change.case, self.case)
                and change.vanished() <= ({self.vanish} if self.vanish else set())
                and change.appeared() <= ({self.appear} if self.appear else set()))

    def describe(self) -> str:
        return f"{self.case}: {self.vanish or 'nothing'} → {self.appear or 'nothing'}"


@dataclass(frozen=True)
class DeviceChange:
    """A device's counters for one workload on both kernels, and the ratio of its access times."""

    test: str
    device: str
    workload: str
    before: dict[str, int]
    after: dict[str, int]
    time_ratio: tuple[float, float, float] | None  # patched/base: median access time, and its quartiles

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def line(self) -> str:
        parts = [f"{k} {self.before.get(k, '-')} → {self.after.get(k, '-')}" if self.before.get(k) != self.after.get(k)
                 else f"{k} {self.before.get(k, '-')}" for k in sorted(self.before.keys() | self.after.keys())]
        if self.time_ratio:
            mid, lo, hi = self.time_ratio
            parts.append(f"access time x{mid:.2f} ({lo:.2f} to {hi:.2f})")
        return f"{self.device} {self.workload}: " + ", ".join(parts)


@dataclass
class Comparison:
    base: str
    patched: str
    outcomes: list[OutcomeChange] = field(default_factory=list)
    tests: tuple[int, int] = (0, 0)  # how many tests each side ran
    new_splats: list[str] = field(default_factory=list)
    gone_splats: list[str] = field(default_factory=list)
    events: list[EventChange] = field(default_factory=list)
    workloads: int = 0  # workloads whose events were compared
    completeness: dict[str, list[str]] = field(default_factory=dict)  # side -> failures ("" side: none ran)
    completeness_ran: tuple[int, int] = (0, 0)
    unseen: list[ExpectedChange] = field(default_factory=list)  # intended changes that did not happen
    devices: list[DeviceChange] = field(default_factory=list)
    builds: dict[str, dict[str, object]] = field(default_factory=dict)  # side -> build figures
    notes: list[str] = field(default_factory=list)
    bisect: str = ""  # for a commit range of a git base: the `harness bisect` that finds the commit behind it

    @property
    def regressions(self) -> list[OutcomeChange]:
        return [c for c in self.outcomes if c.kind == "regressed"]

    def exit_code(self) -> int:
        if (self.regressions or self.new_splats or self.completeness.get("patched") or self.unseen
                or any(e.intended is False for e in self.events)):
            return EXIT_REGRESSED
        if self.events or any(c.kind == "events" for c in self.outcomes) or any(d.changed for d in self.devices):
            return EXIT_EVENTS
        return EXIT_SAME

    def verdict(self) -> str:
        return {EXIT_SAME: "nothing changed", EXIT_REGRESSED: "REGRESSED",
                EXIT_EVENTS: "only notifier events or a device's counters changed"}[self.exit_code()]


def compare(base: str, patched: str, base_runs: list[Path], patched_runs: list[Path],
            cases: Mapping[str, EventCase], expected: list[ExpectedChange] | None = None) -> Comparison:
    """Compare the run directories of the two kernels; `cases` are the base's expectations by workload/case
    (harness/checks/expectations.py's load(series)): they name each event's call site."""
    out = Comparison(base, patched)
    before, after = _results(base_runs), _results(patched_runs)
    out.tests = (len(before), len(after))
    out.events = _event_changes(base_runs, patched_runs, cases)
    out.workloads = len(_workload_dirs(base_runs).keys() & _workload_dirs(patched_runs).keys())
    out.devices = _device_changes(base_runs, patched_runs)
    changed_events = {e.test for e in out.events}
    for test in sorted(before.keys() | after.keys()):
        b, a = before.get(test), after.get(test)
        if change := _outcome_change(test, b, a, changed_events, patched_runs):
            out.outcomes.append(change)
    base_titles, patched_titles = _splat_titles(base_runs), _splat_titles(patched_runs)
    out.new_splats = sorted(patched_titles - base_titles)
    out.gone_splats = sorted(base_titles - patched_titles)
    for side, results in (("base", before), ("patched", after)):
        checks = [r for name, r in results.items() if COMPLETENESS in name]
        runs = base_runs if side == "base" else patched_runs
        out.completeness[side] = ["\n      ".join([f"{r.test}:", *(details(r.test, runs) or (r.reason,))])
                                  for r in checks if r.outcome in FAILED]
    out.completeness_ran = (sum(COMPLETENESS in t for t in before), sum(COMPLETENESS in t for t in after))
    if expected is not None:
        out.events = [_judged(e, expected) for e in out.events]
        out.unseen = [x for x in expected if not any(x.allows(e) for e in out.events)]
    return out


def _results(run_dirs: list[Path]) -> dict[str, Result]:
    found: dict[str, Result] = {}
    for run in run_dirs:
        path = RunDir(run).outcomes
        for r in read_results(path) if path.exists() else []:
            found[r.test] = r
    return found


def _outcome_change(test: str, b: Result | None, a: Result | None, changed_events: set[str],
                    patched_runs: list[Path]) -> OutcomeChange | None:
    before, after = (b.outcome if b else None), (a.outcome if a else None)
    if before == after:
        return None
    if after in FAILED or after == Outcome.INFRA:
        kind = "events" if test in changed_events and _only_expectations_failed(test, patched_runs) else "regressed"
        return OutcomeChange(test, before, after, a.reason if a else "", kind, details(test, patched_runs))
    if before in FAILED and after == Outcome.PASS:
        return OutcomeChange(test, before, after, b.reason if b else "", "fixed")
    either = a or b
    return OutcomeChange(test, before, after, either.reason if either else "", "changed")


def _only_expectations_failed(test: str, run_dirs: list[Path]) -> bool:
    """The test failed on its event expectations alone (its checks.json), not on the notifier contract
    or a workload check: the event change is the whole story, and the event diff shows it."""
    for run in run_dirs:
        path = RunDir(run).test_dir(test) / CHECKS_JSON
        if path.exists():
            checks = json.loads(path.read_text())
            return bool(checks.get("expectations")) and not any(v for k, v in checks.items() if k != "expectations")
    return False


def details(test: str, run_dirs: list[Path], most: int = 4) -> tuple[str, ...]:
    """The first problems a test recorded in its checks.json, the ones that break a mirror first."""
    for run in run_dirs:
        path = RunDir(run).test_dir(test) / CHECKS_JSON
        if path.exists():
            checks = json.loads(path.read_text())
            found = [p for kind in ("completeness", "contract", "extra", "expectations") for p in checks.get(kind, [])]
            more = [f"... and {len(found) - most} more"] if len(found) > most else []
            return tuple(line.splitlines()[0] for line in found[:most]) + tuple(more)
    return ()


def _splat_titles(run_dirs: list[Path]) -> set[str]:
    return {s.title for run in run_dirs for log in sorted(run.glob("vm-*/console.log"))
            for s in find_splats(log.read_text(errors="replace"))}


def _workload_dirs(run_dirs: list[Path]) -> dict[str, Path]:
    """Test directories that hold one workload's events.json and program.json, by test directory name."""
    return {d.name: d for run in run_dirs for d in sorted((run / "tests").glob("*"))
            if (d / "events.json").exists() and (d / "program.json").exists()}


def _test_name(run_dirs: list[Path], dirname: str) -> str:
    """The node id of a test directory, from outcomes.json (a directory name is a mangled node id)."""
    for run in run_dirs:
        path = RunDir(run).outcomes
        for r in read_results(path) if path.exists() else []:
            if RunDir(run).test_dir(r.test).name == dirname:
                return r.test
    return dirname


def signature(events: list[Event], info: dict) -> dict[Group, Counter[str]]:
    """Each invalidation counted under the first range it touches (the target first) and its relation."""
    page = int(info["page_size"])
    ranges = {n: (int(r[0]), int(r[1])) for n, r in info.get("ranges", {}).items()}
    order = sorted(ranges, key=lambda n: (n != "target", n))
    sig: dict[Group, Counter[str]] = {}
    for e in invalidations(events):
        group = Group(e.sub, ELSEWHERE, "elsewhere")
        for name in order:
            start, end = ranges[name]
            if e.start < end and start < e.end:
                rel = next((r for r in ("equal", "page", "covers", "within")
                            if related(e, start, end, r, page)), "overlaps")
                group = Group(e.sub, name, rel)
                break
        sig.setdefault(group, Counter())[e.event] += 1
    return sig


def _event_changes(base_runs: list[Path], patched_runs: list[Path],
                   cases: Mapping[str, EventCase]) -> list[EventChange]:
    before, after = _workload_dirs(base_runs), _workload_dirs(patched_runs)
    changes = []
    for name in sorted(before.keys() & after.keys()):
        b_info = json.loads((before[name] / "program.json").read_text())
        a_info = json.loads((after[name] / "program.json").read_text())
        case_name = f"{b_info.get('workload', '?')}/{b_info.get('case', '?')}"
        case = cases.get(case_name)
        deterministic = case.deterministic if case else True
        b_sig = signature(_events(before[name]), b_info)
        a_sig = signature(_events(after[name]), a_info)
        test = _test_name(patched_runs, name)
        for group in sorted(b_sig.keys() | a_sig.keys(), key=lambda g: (g.observer, g.range, g.relation)):
            b, a = dict(b_sig.get(group, {})), dict(a_sig.get(group, {}))
            exact = deterministic and group.range != ELSEWHERE
            if (b != a) if exact else (set(b) != set(a)):
                changes.append(EventChange(test, case_name, group, b, a, _site(case, group), exact))
    return changes


def _events(test_dir: Path) -> list[Event]:
    return [Event(**e) for e in json.loads((test_dir / "events.json").read_text())]


def _site(case: EventCase | None, group: Group) -> str:
    sites = sorted({x.site for x in (case.expect if case else ()) if (x.observer, x.range) ==
                    (group.observer, group.range) and (x.relation == group.relation or group.relation == "page")})
    return ", ".join(sites)


def write_device_counters(test_dir: Path, device: str, workload: str, counters: dict[str, int],
                          access_s: list[float]) -> None:
    """What a device test leaves for compare: its counters for one workload and each access's time."""
    (test_dir / DEVICE_JSON).write_text(json.dumps({"device": device, "workload": workload, "counters": counters,
                                                    "access_s": access_s}, indent=1))


def _device_changes(base_runs: list[Path], patched_runs: list[Path]) -> list[DeviceChange]:
    def found(runs: list[Path]) -> dict[str, Path]:
        return {d.name: d / DEVICE_JSON for run in runs for d in sorted((run / "tests").glob("*"))
                if (d / DEVICE_JSON).exists()}
    before, after = found(base_runs), found(patched_runs)
    out = []
    for name in sorted(before.keys() & after.keys()):
        b, a = (json.loads(p.read_text()) for p in (before[name], after[name]))
        out.append(DeviceChange(_test_name(patched_runs, name), b["device"], b["workload"], b["counters"],
                                a["counters"], time_ratio(b.get("access_s") or [], a.get("access_s") or [])))
    return out


def time_ratio(before: list[float], after: list[float]) -> tuple[float, float, float] | None:
    """patched/base of the median access time, with the ratio of the lower and of the upper quartiles as
    its spread: one sitting, the same machine, so the ratio (not the absolute time) is the figure."""
    if len(before) < 4 or len(after) < 4 or min(before) <= 0:
        return None
    qb, qa = statistics.quantiles(before, n=4), statistics.quantiles(after, n=4)
    return (statistics.median(after) / statistics.median(before), qa[0] / qb[0], qa[2] / qb[2])


_EVENT = schema.Either((schema.Str(r"(MMU_NOTIFY_)?[A-Z_]+", "an event name (CLEAR or MMU_NOTIFY_CLEAR)"),
                        schema.Null()))


def _from_or_to(change: dict, at: schema.KeyPath) -> None:
    if not (change["from"] or change["to"]):
        raise schema.Invalid(at, "give `from` and/or `to` (event names): a change that trades nothing allows nothing")


EXPECT_EVENTS = schema.Record({
    "changes": schema.required(schema.ListOf(schema.Record({
        "case": schema.required(schema.Str(), "a glob over workloads (mprotect/*)"),
        "from": schema.optional(_EVENT, None, "an event that may vanish"),
        "to": schema.optional(_EVENT, None, "an event that may appear"),
    }, "a change", (_from_or_to,))), "the event changes a series means to make"),
}, "a mapping")


def load_expected(path: Path) -> list[ExpectedChange]:
    """An --expect-events file: `changes:` a list of {case: GLOB, from: EVENT|null, to: EVENT|null}."""
    changes = schema.load(path, EXPECT_EVENTS, ExpectEventsError).data["changes"]
    return [ExpectedChange(c["case"], _event_name(c["from"]), _event_name(c["to"])) for c in changes]


def _event_name(value: object) -> str | None:
    return str(value).removeprefix("MMU_NOTIFY_") if value else None


def _judged(change: EventChange, expected: list[ExpectedChange]) -> EventChange:
    return EventChange(change.test, change.case, change.group, change.before, change.after, change.site,
                       change.exact, intended=any(x.allows(change) for x in expected))


def render_text(c: Comparison) -> str:
    """The report a maintainer pastes into a mail: plain text, most important first."""
    lines = [f"harness compare: {c.base}", f"            vs: {c.patched}", *c.notes, ""]
    for side, fig in c.builds.items():
        lines.append(f"build ({side}): " + ", ".join(f"{k} {v}" for k, v in fig.items()))
    regressed = [x for x in c.outcomes if x.kind == "regressed"]
    lines += ["", f"Tests: {c.tests[0]} on the base, {c.tests[1]} patched; {len(regressed)} regressed, "
              f"{sum(x.kind == 'fixed' for x in c.outcomes)} fixed, "
              f"{sum(x.kind == 'events' for x in c.outcomes)} failing on changed events alone"]
    for kind, title in (("regressed", "regressed"), ("events", "fail on changed events only (see Events)"),
                        ("fixed", "fixed"), ("changed", "other changes")):
        rows = [x for x in c.outcomes if x.kind == kind]
        if rows:
            lines.append(f"  {title}:")
            lines += [f"    {x.line()}" for x in rows]
    lines += ["", f"Splats: {len(c.new_splats)} new, {len(c.gone_splats)} gone"]
    lines += [f"  new: {t}" for t in c.new_splats] + [f"  gone: {t}" for t in c.gone_splats]
    lines += ["", f"Events: {c.workloads} workloads compared; {len({e.case for e in c.events})} changed"]
    lines += [f"  {e.line()}" for e in c.events]
    lines += [f"  intended but not seen: {x.describe()}" for x in c.unseen]
    if c.devices:
        lines += ["", f"Devices: {len(c.devices)} workloads; counters changed in {sum(d.changed for d in c.devices)}"]
        lines += [f"  {d.line()}" for d in c.devices]
    ran_b, ran_p = c.completeness_ran
    lines += ["", f"Completeness (every moved page invalidated): base {ran_b - len(c.completeness.get('base', []))}"
              f"/{ran_b} pass, patched {ran_p - len(c.completeness.get('patched', []))}/{ran_p} pass"]
    lines += [f"  {side}: {f}" for side in ("base", "patched") for f in c.completeness.get(side, [])]
    lines += ["", f"Verdict: {c.verdict()} (exit {c.exit_code()})"]
    lines += [f"Find the commit: {c.bisect}"] if c.bisect else []
    return visible("\n".join(lines) + "\n")  # reasons and splat titles are guest output: no raw controls


def render_markdown(c: Comparison) -> str:
    """The text report in a code block whose fence is longer than any run of backticks in it: a reason
    that holds ``` cannot end the block and turn the rest into markdown."""
    text = render_text(c)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"# harness compare\n\n{fence}\n{text}{fence}\n"


def to_json(c: Comparison) -> dict[str, object]:
    return {
        "base": c.base, "patched": c.patched, "exit": c.exit_code(), "verdict": c.verdict(), "notes": c.notes,
        "tests": {"base": c.tests[0], "patched": c.tests[1]},
        "outcomes": [{"test": x.test, "before": x.before.value if x.before else None,
                      "after": x.after.value if x.after else None, "kind": x.kind, "reason": x.reason}
                     for x in c.outcomes],
        "splats": {"new": c.new_splats, "gone": c.gone_splats},
        "events": [{"test": e.test, "case": e.case, "observer": e.group.observer, "range": e.group.range,
                    "relation": e.group.relation, "before": e.before, "after": e.after, "site": e.site,
                    "exact": e.exact, "intended": e.intended} for e in c.events],
        "unseen": [x.describe() for x in c.unseen],
        "devices": [{"test": d.test, "device": d.device, "workload": d.workload, "before": d.before,
                     "after": d.after, "time_ratio": d.time_ratio} for d in c.devices],
        "completeness": {"ran": {"base": c.completeness_ran[0], "patched": c.completeness_ran[1]},
                         "failures": c.completeness},
        "builds": c.builds, "bisect": c.bisect,
    }
