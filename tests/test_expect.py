import textwrap

import pytest

from harness.checks import expectations
from harness.checks.expectations import Case, Expectation, ExpectationError, check, load
from harness.results.events import Event

PAGE = 4096
A = 0x7F0000000000


def ev(seq, event, start, end, kind="start", sub="mn"):
    return Event(seq, 100, 100, kind, event, start, end, 1, sub)


def info(**ranges):
    return {"pid": 100, "page_size": PAGE, "ranges": {k: list(v) for k, v in ranges.items()}}


def case(*exps, only=True):
    return Case("t/t", ("prog",), tuple(exps), only=only, basis="6.12")


def test_real_file_loads_for_both_series_and_cites_a_site_everywhere():
    for series in ("6.12", "6.1"):
        cases = load(series)
        assert "munmap/whole" in cases and "madvise/pageout" in cases
        for c in cases.values():
            for e in c.expect:
                assert e.site.startswith(("mm/", "fs/")), f"{c.name}: {e.event} has no mm/ call site"


def test_version_override_replaces_expect_and_names_its_basis():
    new, old = load("6.12")["mprotect/unpop-pud"], load("6.1")["mprotect/unpop-pud"]
    assert [e.event for e in new.expect] == ["PROTECTION_VMA"] and new.basis == "6.12"
    assert old.expect == () and old.basis == "6.1"
    # A series without its own entry gets the default, and says which source that came from.
    assert load("6.6")["mprotect/unpop-pud"].basis == "6.12"


def test_a_case_since_a_version_skips_before_it_and_names_its_own_source():
    for series in ("6.1", "6.12"):
        reason = load(series)["guard/populated"].unavailable(series)
        assert "Linux " + series + " has no guard regions" in reason and "since 6.13" in reason
    guard = load("7.3")["guard/populated"]
    assert guard.unavailable("7.3") == "" and guard.unavailable("10.0") == "" and guard.basis == "7.3"
    assert load("6.12")["munmap/whole"].unavailable("6.1") == ""  # no `since`: runs everywhere


def test_equal_count_and_only():
    c = case(Expectation("UNMAP", "target", "equal", "mm/memory.c:unmap_vmas", count=1))
    good = [ev(0, "UNMAP", A, A + 4 * PAGE), ev(1, "UNMAP", A, A + 4 * PAGE, kind="end"),
            ev(2, "CLEAR", 0x4A9000, 0x4AA000)]  # the program's own .data COW: outside its ranges
    assert check(c, good, info(target=(A, A + 4 * PAGE))).ok
    twice = [*good, ev(3, "UNMAP", A, A + 4 * PAGE)]
    (failure,) = check(c, twice, info(target=(A, A + 4 * PAGE))).failures
    assert "saw 2" in failure and "mm/memory.c:unmap_vmas" in failure


def test_only_reports_an_unexpected_event_once_with_its_range():
    c = case()
    out = check(c, [ev(5, "CLEAR", A, A + 8 * PAGE)], info(a=(A, A + PAGE), b=(A + PAGE, A + 2 * PAGE)))
    (failure,) = out.failures
    assert "unexpected mn CLEAR" in failure and "'a'" in failure and "seq 5" in failure
    assert check(case(only=False), [ev(5, "CLEAR", A, A + 8 * PAGE)], info(a=(A, A + PAGE))).ok


@pytest.mark.parametrize("relation,start,end,ok", [
    ("covers", 0, 1 << 64, True), ("covers", A + PAGE, A + 4 * PAGE, False),
    ("within", A + PAGE, A + 2 * PAGE, True), ("within", A - PAGE, A + PAGE, False),
    ("page", A + PAGE, A + 2 * PAGE, True), ("page", A + PAGE, A + 3 * PAGE, False),
    ("equal", A, A + 4 * PAGE, True), ("equal", A, A + 3 * PAGE, False),
])
def test_relations(relation, start, end, ok):
    c = case(Expectation("CLEAR", "target", relation, "mm/x.c:f", count=1), only=False)
    assert check(c, [ev(0, "CLEAR", start, end)], info(target=(A, A + 4 * PAGE))).ok == ok


def test_count_pages_and_min():
    per_page = case(Expectation("CLEAR", "target", "page", "mm/rmap.c:try_to_unmap_one", count="pages"))
    events = [ev(i, "CLEAR", A + i * PAGE, A + (i + 1) * PAGE) for i in range(4)]
    assert check(per_page, events, info(target=(A, A + 4 * PAGE))).ok
    (failure,) = check(per_page, events[:3], info(target=(A, A + 4 * PAGE))).failures
    assert "saw 3 (wanted 4)" in failure
    at_least = case(Expectation("CLEAR", "target", "page", "mm/ksm.c:replace_page", min=1))
    assert not check(at_least, [], info(target=(A, A + 4 * PAGE))).ok
    assert check(at_least, events[:1], info(target=(A, A + 4 * PAGE))).ok


def test_observer_separates_interval_invalidations():
    c = case(Expectation("RELEASE", "target", "covers", "mm/mmu_notifier.c:mn_itree_release", count=1,
                         observer="itv"))
    itv = ev(0, "RELEASE", 0, (1 << 64) - 1, kind="invalidate", sub="itv")
    assert check(c, [itv], info(target=(A, A + PAGE))).ok
    wrong_sub = ev(0, "RELEASE", 0, (1 << 64) - 1, kind="start", sub="mn")
    assert not check(c, [wrong_sub], info(target=(A, A + PAGE))).ok


def test_missing_range_is_a_failure_not_a_crash():
    c = case(Expectation("UNMAP", "old", "equal", "mm/mremap.c:move_page_tables", count=1))
    (failure,) = check(c, [], info(target=(A, A + PAGE))).failures
    assert "printed no range 'old'" in failure


@pytest.mark.parametrize("body,message", [
    ("x: {run: [p], expect: [{event: A, range: r, relation: near, site: s, count: 1}]}", "relation"),
    ("x: {run: [p], expect: [{event: A, range: r, relation: equal, site: s}]}", "exactly one of count and min"),
    ("x: {run: [p], expect: [{event: A, range: r, relation: equal, site: s, count: lots}]}",
     "count: expected an integer >= 0 or the word pages"),
    ("x: {run: [p], expect: [{event: A, range: r, relation: equal, site: s, count: 1, colour: red}]}", "colour"),
    ("x: {run: [p], needs: [gpu]}", r"cases.x.needs\[0\]: expected a guest setup .*swap.*, found the string 'gpu'"),
    ("x: {expect: []}", "cases.x.run: must be given"),
    ("x: {run: [p], typo: 1}", "unknown key"),
    ("x: {run: [p], since: {version: 6.13, feature: f}}", "quoted"),
    ("x: {run: [p], since: {version: '6.13'}}", "cases.x.since.feature: must be given"),
])
def test_malformed_files_are_errors(tmp_path, body, message):
    path = tmp_path / "e.yaml"
    path.write_text("source: '6.12'\ncases:\n" + textwrap.indent(body, "  ") + "\n")
    with pytest.raises(ExpectationError, match=message):
        load("6.12", path)


def test_invalidations_are_starts_and_interval_invalidates():
    records = [ev(0, "UNMAP", A, A + PAGE), ev(1, "UNMAP", A, A + PAGE, kind="end"),
               Event(2, 100, 100, "release"), ev(3, "UNMAP", 0, 1 << 64, kind="invalidate", sub="itv")]
    assert [e.seq for e in expectations.invalidations(records)] == [0, 3]
