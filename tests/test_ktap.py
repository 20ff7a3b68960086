"""harness/observe/ktap.py on real output of the 6.12.117 tree's hmm-tests, captured in a guest (tests/data/ktap/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.observe import ktap

DATA = Path(__file__).parent / "data" / "ktap"


def load(name: str) -> str:
    return (DATA / f"hmm-tests-6.12.117-{name}.txt").read_text()


def test_full_run_one_result_per_test_matching_the_totals():
    run = ktap.parse(load("full"))
    assert (run.version, run.plan, run.complete) == ("13", 58, True)
    assert run.counts() == {"pass": 23, "fail": 3, "skip": 32, "xfail": 0, "xpass": 0}
    assert run.totals == {"pass": 23, "fail": 3, "xfail": 0, "xpass": 0, "skip": 32, "error": 0}
    assert [r.number for r in run.results] == list(range(1, 59))
    assert len(run.by_name()) == 58


def test_results_carry_status_reason_and_their_own_log():
    by_name = ktap.parse(load("full")).by_name()
    skip = by_name["hmm.hmm_device_private.anon_write_hugetlbfs"]
    assert (skip.status, skip.reason) == ("skip", "Huge page size could not be determined")
    fail = by_name["hmm.hmm_device_private.exclusive"]
    assert (fail.status, fail.reason) == ("fail", "")
    assert fail.log.splitlines()[0] == "#  RUN           hmm.hmm_device_private.exclusive ..."
    assert "hmm-tests.c:1817:exclusive:Expected ret (-16) == 0 (0)" in fail.log
    assert fail.log.rstrip().endswith("not ok 22 hmm.hmm_device_private.exclusive")
    coherent = by_name["hmm.hmm_device_coherent.anon_read"]
    assert coherent.reason == "DEVICE_COHERENT not available"
    assert "could not open hmm dmirror driver (/dev/hmm_dmirror2)" in coherent.log  # its stderr, interleaved
    assert "hmm.hmm_device_coherent.open_close" not in coherent.log


@pytest.mark.parametrize(("name", "status", "reason"), [
    ("pass", "pass", ""), ("fail", "fail", ""), ("skip", "skip", "DEVICE_COHERENT not available")])
def test_single_test_runs(name, status, reason):
    run = ktap.parse(load(name))
    assert run.plan == 1 and run.complete
    (result,) = run.results
    assert (result.status, result.reason) == (status, reason)
    assert run.tail.startswith("# ")  # the closing PASSED/FAILED and Totals lines


def test_unknown_test_name_runs_nothing():
    run = ktap.parse(load("none"))
    assert run.plan == 0 and run.results == [] and run.complete


def test_killed_run_is_incomplete_and_names_what_never_reported():
    run = ktap.parse(load("killed"))
    full = [r.name for r in ktap.parse(load("full")).results]
    assert not run.complete and run.plan == 52
    assert len(run.results) == 11
    assert run.missing(full[:52])[0] == "hmm.hmm_device_private.migrate"
    assert run.tail.strip() == "#  RUN           hmm.hmm_device_private.migrate ..."


@pytest.mark.parametrize(("line", "parsed"), [
    ("ok 1 a.b", ("pass", 1, "a.b", "")),
    ("not ok 22 hmm.x # some diagnostic", ("fail", 22, "hmm.x", "some diagnostic")),
    ("not ok 3 t #  msg", ("fail", 3, "t", "msg")),
    ("ok 9 t # SKIP why not", ("skip", 9, "t", "why not")),
    ("ok 4 t # XFAIL known", ("xfail", 4, "t", "known")),
    ("ok 5 t # XPASS ", ("xpass", 5, "t", "")),
    ("ok 6 # SKIP no name", ("skip", 6, "", "no name")),
    ("not ok 7 t # SKIP", ("fail", 7, "t", "SKIP")),  # a directive only counts on ok
    ("# ok 1 t", None),
    ("okay", None),
])
def test_result_lines(line, parsed):
    assert ktap.parse_result_line(line) == parsed


def test_program_list_gives_the_same_tests_as_the_run():
    listed = ktap.harness_list(load("list"))
    assert listed == [r.name for r in ktap.parse(load("full")).results]


SOURCE = """
// TEST(commented_out)
TEST(plain) { }
TEST_SIGNAL(dies, SIGABRT) { }
FIXTURE(f) { int x; };
FIXTURE_VARIANT(f) { int v; };
FIXTURE_VARIANT_ADD(f, one) { .v = 1 };
FIXTURE_VARIANT_ADD(f, two) { .v = 2 };
/* TEST_F(f, in_a_comment) */
TEST_F(f, first) { }
TEST_F_TIMEOUT(f, slow, 60) { }
FIXTURE(g) { };
TEST_F(g, alone) { }
"""


def test_tests_in_source():
    assert ktap.tests_in_source(SOURCE) == ["global.plain", "global.dies", "f.one.first", "f.one.slow",
                                            "f.two.first", "f.two.slow", "g.alone"]


def test_tests_in_the_real_hmm_tests_source_match_the_program():
    src = paths.cache_root() / "src/linux-source-6.12/tools/testing/selftests/mm/hmm-tests.c"
    if not src.exists():
        pytest.skip(f"{src} is not unpacked in this cache")
    assert ktap.tests_in_source(src.read_text()) == ktap.harness_list(load("list"))


def test_linux_6_1_skips_without_a_name_take_the_run_lines_name():
    """6.1's kselftest prints `ok 9 # SKIP reason`; its hmm-tests also repeats a failing teardown ASSERT
    until the 30 s timeout (captured with consecutive repeats dropped, as the suite runs it)."""
    run = ktap.parse((DATA / "hmm-tests-6.1.192-full-dedup.txt").read_text())
    assert run.complete and run.plan == 58
    skip = run.by_name()["hmm.hmm_device_private.anon_write_hugetlbfs"]
    assert (skip.number, skip.status, skip.reason) == (9, "skip", "Huge page size could not be determined")
    assert [r.name for r in run.results] == [r.name for r in ktap.parse(load("full")).results]
    assert run.by_name()["hmm.hmm_device_private.exclusive"].status == "fail"


def test_linux_6_1_skips_reported_as_ok_are_skips():
    """6.1's hmm-tests skips the DEVICE_COHERENT variants with SKIP(exit(0), ...) in FIXTURE_SETUP and its harness
    then prints `ok N NAME` (the child exits 0 before `if (t->skip) _exit(255)`); the test's own log says SKIP.
    Parsed so, 6.1 and 6.12 give every test the same status."""
    run = ktap.parse((DATA / "hmm-tests-6.1.192-full-dedup.txt").read_text())
    coherent = run.by_name()["hmm.hmm_device_coherent.anon_read"]
    assert (coherent.number, coherent.status, coherent.reason) == (28, "skip", "DEVICE_COHERENT not available")
    assert run.totals["pass"] == 52  # the kernel's own count still calls them passes
    assert run.counts() == {"pass": 23, "fail": 3, "skip": 32, "xfail": 0, "xpass": 0}
    assert {r.name: r.status for r in run.results} == {r.name: r.status for r in ktap.parse(load("full")).results}


@pytest.mark.parametrize(("text", "status"), [
    ("#  RUN  f.t ...\n#      SKIP      why\n#            OK  f.t\nok 1 f.t\n", "skip"),
    ("#  RUN  f.t ...\n#            OK  f.t\nok 1 f.t\n", "pass"),
    ("#  RUN  f.t ...\n#      SKIP      why\n#          FAIL  f.t\nnot ok 1 f.t\n", "fail"),  # never hides a failure
])
def test_a_skip_line_turns_only_a_pass_into_a_skip(text, status):
    (result,) = ktap.parse(text).results
    assert result.status == status
