"""The mm-selftests profile's pure logic: its program list, the recipes read from the selftests Makefile of each
tree, the compiler's first error, and a kselftest program's outcome and summary; no guest, no compiler."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.checks import drivers
from harness.checks.workloads import GuestSetup
from harness.kernel import userprogs
from harness.observe import ktap
from tests.trees import kernel_tree


def test_the_profile_lists_its_programs():
    profile = drivers.load_driver("mm-selftests")
    assert profile.machine == "numa2" and profile.suites == ("suites/test_mm_selftests.py",)
    programs = {r.program for r in profile.programs}
    assert {"mremap_test", "migration", "ksm_tests", "cow", "soft-dirty", "madv_populate", "guard-regions"} <= programs
    runs = {r.id: r for r in profile.programs}
    assert runs["mremap_test"] == drivers.SelftestRun(id="mremap_test", program="mremap_test")
    assert runs["ksm_tests-merge"].args == ("-M", "-p", "10")
    assert runs["cow"].needs == ("swap",)
    for run in profile.programs:  # every setup a run needs is one GuestSetup provides
        assert all(hasattr(GuestSetup, f"_{need}") for need in run.needs), run


def test_known_failures_name_subtests_and_need_their_code(tmp_path: Path):
    profile = drivers.load_driver("mm-selftests")
    name = "mremap_test: 2GB mremap - Source PUD-aligned, Destination PMD-aligned"
    assert profile.known_failure(name, "6.12", tree=tmp_path) is None  # a tree without the code
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm/util.c").write_text("\t\tif (pages > totalram_pages() +\n\t\t    total_swap_pages)\n")
    assert "OVERCOMMIT_GUESS" in (profile.known_failure(name, "6.12", tree=tmp_path) or "")
    assert profile.known_failure("mremap_test: 4MB mremap - Source PMD-aligned, Destination PTE-aligned", "6.12",
                                 tree=tmp_path) is None


@pytest.mark.parametrize("series", ["6.1", "6.12", "7.3"])
def test_known_failures_are_tied_to_code_the_trees_have(series):
    """The overcommit check is in every tree. KSM's NUMA merge is no known failure anywhere: the run turns
    smart scan (6.7+) off, which made it fail at random, so it must pass on every tree."""
    profile = drivers.load_driver("mm-selftests")
    tree = kernel_tree(series)
    assert profile.known_failure("mremap_test: 2GB mremap - Source PUD-aligned, Destination PUD-aligned", series,
                                 tree=tree)
    assert not profile.known_failure("ksm_tests-numa-across: KSM NUMA merging", series, tree=tree)
    numa = next(run for run in profile.programs if run.id == "ksm_tests-numa-across")
    assert "ksm_every_page_every_scan" in numa.needs


@pytest.mark.parametrize(("text", "error"), [
    ("programs: [{args: [-x]}]\n", "bad.yaml:3: programs[0].program: must be given"),
    ("programs: [{program: cow, colour: red}]\n", "bad.yaml:3: programs[0].colour: unknown key(s) ['colour']"),
    ("programs: [{program: cow, args: [1]}]\n", "bad.yaml:3: programs[0].args[0]: expected a string, found the "
     "number 1"),
    ("programs: [cow, {program: cow}]\n", "bad.yaml:3: programs[1]: programs need distinct ids"),
    ("known_failures: [{tests: [x], reason: r, without: USERFAULTFD}]\n",
     "bad.yaml:3: known_failures[0].without: expected a list"),
])
def test_malformed_programs(tmp_path: Path, monkeypatch, text, error):
    monkeypatch.setattr(drivers, "DRIVERS", tmp_path)
    (tmp_path / "bad.yaml").write_text("machine: default\nsuites: [suites/test_mm_selftests.py]\n" + text)
    with pytest.raises(drivers.DriverError, match=re.escape(error)):
        drivers.load_driver("bad")


MAKEFILE_7X = """\
CFLAGS = -Wall -O2 -I $(top_srcdir) $(EXTRA_CFLAGS) $(KHDR_INCLUDES) $(TOOLS_INCLUDES)
LDLIBS = -lrt -lpthread -lm
TEST_GEN_FILES = cow
TEST_GEN_FILES += ksm_tests
include ../lib.mk

$(TEST_GEN_PROGS): vm_util.c hugepage_settings.c
$(TEST_GEN_FILES): vm_util.c hugepage_settings.c

$(OUTPUT)/uffd-stress: uffd-common.c
$(BINARIES_32) $(BINARIES_64): pkey_util.c
$(BINARIES_32): CFLAGS += -m32 -mxsave
$(OUTPUT)/cow: LDLIBS += $(IOURING_EXTRA_LIBS)
$(OUTPUT)/mlock-random-test $(OUTPUT)/memfd_secret: LDLIBS += -lcap
$(OUTPUT)/ksm_tests: LDLIBS += -lnuma
$(OUTPUT)/migration: \\
	LDLIBS += -lnuma
"""

MAKEFILE_6_1 = """\
LDLIBS = -lrt -lpthread
$(OUTPUT)/khugepaged: vm_util.c
$(OUTPUT)/soft-dirty: vm_util.c
$(OUTPUT)/ksm_tests: LDLIBS += -lnuma
"""


@pytest.mark.parametrize(("makefile", "name", "sources", "libs"), [
    (MAKEFILE_7X, "cow", ("cow.c", "vm_util.c", "hugepage_settings.c"), ("-lrt", "-lpthread", "-lm")),
    (MAKEFILE_7X, "ksm_tests", ("ksm_tests.c", "vm_util.c", "hugepage_settings.c"),
     ("-lrt", "-lpthread", "-lm", "-lnuma")),
    (MAKEFILE_7X, "migration", ("migration.c", "vm_util.c", "hugepage_settings.c"),
     ("-lrt", "-lpthread", "-lm", "-lnuma")),  # a continued line
    (MAKEFILE_7X, "memfd_secret", ("memfd_secret.c", "vm_util.c", "hugepage_settings.c"),
     ("-lrt", "-lpthread", "-lm", "-lcap")),  # one of two targets
    (MAKEFILE_7X, "uffd-stress", ("uffd-stress.c", "vm_util.c", "hugepage_settings.c", "uffd-common.c"),
     ("-lrt", "-lpthread", "-lm")),
    (MAKEFILE_6_1, "soft-dirty", ("soft-dirty.c", "vm_util.c"), ("-lrt", "-lpthread")),
    (MAKEFILE_6_1, "mremap_test", ("mremap_test.c",), ("-lrt", "-lpthread")),
])
def test_recipe_from_the_makefile(makefile, name, sources, libs):
    assert userprogs.selftest_recipe(makefile, name) == userprogs.SelftestRecipe(name, sources, libs)


@pytest.mark.parametrize(("series", "expected"), [
    ("6.1", {"mremap_test": (("mremap_test.c",), ()), "soft-dirty": (("soft-dirty.c", "vm_util.c"), ()),
             "ksm_tests": (("ksm_tests.c",), ("-lnuma",)), "migration": (("migration.c",), ("-lnuma",))}),
    ("6.12", {"cow": (("cow.c", "vm_util.c", "thp_settings.c"), ("-lm",)),
              "ksm_tests": (("ksm_tests.c", "vm_util.c", "thp_settings.c"), ("-lm", "-lnuma"))}),
    ("7.3", {"guard-regions": (("guard-regions.c", "vm_util.c", "hugepage_settings.c"), ("-lm",)),
             "migration": (("migration.c", "vm_util.c", "hugepage_settings.c"), ("-lm", "-lnuma"))}),
])
def test_recipes_of_real_trees(series, expected):
    """Each tree's own Makefile: vm/ in 6.1 (per-program sources), thp_settings.c in 6.12, hugepage_settings.c
    in 7.3; every source the recipe names exists."""
    mmdir = userprogs.mm_selftest_dir(kernel_tree(series))
    assert mmdir is not None
    for name, (sources, extra_libs) in expected.items():
        recipe = userprogs.selftest_recipe((mmdir / "Makefile").read_text(), name)
        assert recipe.sources == sources
        assert recipe.libs[:2] == ("-lrt", "-lpthread") and recipe.libs[2:] == extra_libs
        assert all((mmdir / s).is_file() for s in recipe.sources)


def test_first_compiler_error():
    stderr = ("In file included from cow.c:24:\n"
              "cow.c: In function 'main':\n"
              "cow.c:10:5: warning: unused variable 'x' [-Wunused-variable]\n"
              "cow.c:12:1: error: expected ';' before '}' token\n"
              "cow.c:20:1: error: something later\n")
    assert userprogs.first_compiler_error(stderr) == "cow.c:12:1: error: expected ';' before '}' token"
    assert userprogs.first_compiler_error("cow.c:1:10: fatal error: numa.h: No such file or directory\n") == \
        "cow.c:1:10: fatal error: numa.h: No such file or directory"
    assert userprogs.first_compiler_error("/usr/bin/ld: cannot find -lnuma: No such file or directory\n"
                                          "collect2: error: ld returned 1 exit status\n") == \
        "/usr/bin/ld: cannot find -lnuma: No such file or directory"
    assert userprogs.first_compiler_error("") == "(no output)"


def test_a_missing_program_is_not_in_this_tree(tmp_path: Path):
    (tmp_path / "tools/testing/selftests/vm").mkdir(parents=True)
    (tmp_path / "tools/testing/selftests/vm/Makefile").write_text(MAKEFILE_6_1)
    assert userprogs.mm_selftest_dir(tmp_path) == tmp_path / "tools/testing/selftests/vm"
    assert userprogs.mm_selftest_dir(tmp_path / "nothing") is None


KSFT_MIXED = """\
TAP version 13
1..4
# [RUN] Basic COW after fork() with base page
ok 1 No leak from parent into child
# [RUN] Basic COW after fork() with swapped out base page
ok 2 # SKIP MADV_PAGEOUT did not work, is swap enabled?
# [RUN] R/O-mapping a page registered as iouring fixed buffer with base page
ok 3 # SKIP gup_test not available
# [RUN] Basic COW after fork() with swapped out THP
ok 4 # SKIP MADV_PAGEOUT did not work, is swap enabled?
# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:3 error:0
"""

ALL_SKIPPED = """\
TAP version 13
1..2
# Starting 2 tests from 1 test cases.
#  RUN           migration.private_anon ...
#      SKIP      Not enough threads or NUMA nodes available
#            OK  migration.private_anon
ok 1 migration.private_anon # SKIP Not enough threads or NUMA nodes available
#  RUN           migration.shared_anon ...
#      SKIP      Not enough threads or NUMA nodes available
#            OK  migration.shared_anon
ok 2 migration.shared_anon # SKIP Not enough threads or NUMA nodes available
# PASSED: 2 / 2 tests passed.
"""


@pytest.mark.parametrize(("status", "text", "outcome"), [
    (0, KSFT_MIXED, "pass"),
    (0, ALL_SKIPPED, "skip"),  # kselftest exits 0 when every test skipped
    (4, "TAP version 13\n1..1\n# Config KSM not enabled\n", "skip"),  # ksft_exit_skip() before any result
    (1, KSFT_MIXED, "fail"),
    (137, "TAP version 13\n1..4\nok 1 x\n", "fail"),  # killed by the timeout
    (0, "", "pass"),
])
def test_selftest_outcome(status, text, outcome):
    assert drivers.selftest_outcome(status, ktap.parse(text)) == outcome


KSFT_7X_COW = """\
TAP version 13
1..2
# [RUN] R/O GUP pin on R/O-mapped shared page ... with base page
# gup_test not available
ok 1 # SKIP R/O GUP pin on R/O-mapped shared page ... with base page
# Failed to map source region: Cannot allocate memory
not ok 2 2GB mremap - Source PUD-aligned, Destination PTE-aligned
"""


def test_unnamed_results_take_their_run_line_and_the_summary_groups_them():
    run = ktap.parse(KSFT_MIXED)
    assert [drivers.subtest_name(r) for r in run.results] == [
        "No leak from parent into child", "Basic COW after fork() with swapped out base page",
        "R/O-mapping a page registered as iouring fixed buffer with base page",
        "Basic COW after fork() with swapped out THP"]
    assert drivers.subtests_summary(run) == (
        "subtests: pass 1, skip 3\n"
        "  skip (MADV_PAGEOUT did not work, is swap enabled?): Basic COW after fork() with swapped out base page; "
        "Basic COW after fork() with swapped out THP\n"
        "  skip (gup_test not available): R/O-mapping a page registered as iouring fixed buffer with base page")
    assert drivers.subtests_summary(ktap.parse("")) == "subtests: none reported"


def test_a_reason_printed_before_the_result_line():
    """7.x's cow names the skip after the test and prints why before it; a failure's why is its last message."""
    skip, fail = ktap.parse(KSFT_7X_COW).results
    assert drivers.subtest_name(skip) == "R/O GUP pin on R/O-mapped shared page ... with base page"
    assert drivers.subtest_reason(skip) == "gup_test not available"
    assert drivers.subtest_reason(fail) == "Failed to map source region: Cannot allocate memory"
    many = ktap.parse("1..5\n" + "".join(f"ok {i} t{i} # SKIP why\n" for i in range(1, 6)))
    assert drivers.subtests_summary(many).splitlines()[1] == "  skip (why): t1; t2; t3; ... (5 in all)"


def test_a_known_failure_without_a_config_symbol():
    k = drivers.KnownFailure(tests=("mremap_test: *uffd*",), reason="r", without=("USERFAULTFD",))
    assert k.applies("mremap_test: uffd", "7.3", None, has=lambda sym: False)
    assert not k.applies("mremap_test: uffd", "7.3", None, has=lambda sym: sym == "USERFAULTFD")
    assert not k.applies("mremap_test: uffd", "7.3", None)  # the config unknown: the test must pass
