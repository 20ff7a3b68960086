"""Driver profiles, known failures, the kernel-verdict mapping and the run verdict (harness/checks/drivers.py,
harness/app/driver.py, harness/results/junit.py); no guest needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import paths
from harness.app import driver as driver_app
from harness.checks import drivers
from harness.cli import main as harness_cli
from harness.observe import ktap
from harness.results import junit


def test_every_profile_loads_and_names_real_things():
    assert drivers.known_drivers() == ["gpusvm", "kvm", "kvm-selftests", "mm-selftests", "rxe", "test_hmm",
                                       "virtio-gpu"]
    hmm = drivers.load_driver("test_hmm")
    assert (hmm.machine, hmm.module, hmm.device) == ("default", "test_hmm", "/dev/hmm_dmirror0")
    assert hmm.modules == ("test_hmm",)
    gpusvm = drivers.load_driver("gpusvm")  # a list: the library first, the driver's own module last
    assert (gpusvm.modules, gpusvm.module) == (("drm_gpusvm_helper", "gpusvm_mirror"), "gpusvm_mirror")
    assert hmm.suites == ("suites/test_hmm.py",)
    kvm = drivers.load_driver("kvm")
    assert (kvm.machine, kvm.module, kvm.modules) == ("kvm", None, ())
    assert drivers.load_driver("virtio-gpu").machine == "virtio-gpu"
    kvm_selftests = drivers.load_driver("kvm-selftests")
    assert kvm_selftests.machine == "kvm-selftests" and "mmu_stress_test" in [r.program for r in kvm_selftests.programs]


@pytest.mark.parametrize(("text", "error"), [
    ("machine: default\n", "bad.yaml:1: suites: must be given"),
    ("machine: default\nsuites: [suites/test_hmm.py]\ncolour: red\n", "bad.yaml:3: colour: unknown key(s) ['colour']"),
    ("machine: nowhere\nsuites: [suites/test_hmm.py]\n", "bad.yaml:1: machine: machine profile nowhere"),
    ("machine: default\nsuites: [suites/none.py]\n", "bad.yaml:2: suites[0]: suite suites/none.py does not exist"),
    ("machine: default\nsuites: [suites/test_hmm.py]\nfragments: [no.config]\n",
     "bad.yaml:3: fragments[0]: fragment no.config"),
    ("machine: default\nsuites: [suites/test_hmm.py]\nknown_failures: [{tests: [x]}]\n",
     "bad.yaml:3: known_failures[0].reason: must be given"),
    ("machine: default\nsuites: [suites/test_hmm.py]\nknown_failures: [{tests: [x], reason: r, code: mm/rmap.c}]\n",
     "bad.yaml:3: known_failures[0].code: expected a code condition {file, contains}, found the string 'mm/rmap.c'"),
    ("- a list\n", "bad.yaml:1: the top level: expected a driver profile"),
    ("machine: default\nsuites: [suites/test_hmm.py]\nmodule: [a, ../b]\n",
     "bad.yaml:3: module[1]: expected a module name"),
    ("machine: default\nsuites: [suites/test_hmm.py]\nmodule: []\n", "bad.yaml:3: module"),
])
def test_malformed_profiles_say_what_is_wrong(tmp_path: Path, monkeypatch, text, error):
    monkeypatch.setattr(drivers, "DRIVERS", tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(drivers.DriverError, match=re.escape(error)):
        drivers.load_driver("bad")


def test_unknown_driver():
    known = "gpusvm, kvm, kvm-selftests, mm-selftests, rxe, test_hmm, virtio-gpu"
    with pytest.raises(drivers.DriverError, match=f"known: {known}"):
        drivers.load_driver("nvidia")


def test_known_failures_apply_by_name_series_and_thp():
    k = drivers.KnownFailure(tests=("hmm.*.exclusive",), reason="r", series=("6.12",), thp="always")
    assert k.applies("hmm.hmm_device_private.exclusive", "6.12", "always")
    assert not k.applies("hmm.hmm_device_private.exclusive", "6.12", "madvise")
    assert not k.applies("hmm.hmm_device_private.exclusive", "6.6", "always")
    assert not k.applies("hmm.hmm_device_private.anon_read", "6.12", "always")


def test_known_failures_apply_where_the_tree_has_the_faulty_code(tmp_path: Path):
    """A `code` condition: the tree's file must contain the text (whitespace-insensitive), whatever its version."""
    hmm = drivers.load_driver("test_hmm")
    buggy, fixed = tmp_path / "buggy", tmp_path / "fixed"
    for tree, last in ((buggy, "end >> PAGE_SHIFT"), (fixed, "(end >> PAGE_SHIFT) - 1")):
        (tree / "lib").mkdir(parents=True)
        (tree / "lib/test_hmm.c").write_text(
            f"\txa_for_each_range(&dmirror->pt, pfn, entry, start >> PAGE_SHIFT,\n\t\t\t  {last})\n")
        (tree / "mm").mkdir()
        (tree / "mm/rmap.c").write_text("\t\tif (PageTail(pages[i]) || !folio_trylock(folio)) {\n")
    for series in ("6.1", "6.12", "6.6"):
        assert "lib/test_hmm.c:301" in hmm.known_failure("test_dmirror_invalidation_is_exact[munmap]", series,
                                                         tree=buggy)
        assert "mm/rmap.c" in hmm.known_failure("hmm.hmm_device_private.exclusive_cow", series, "always", buggy)
    assert hmm.known_failure("test_dmirror_invalidation_is_exact[munmap]", "6.12", tree=fixed) is None
    assert hmm.known_failure("test_dmirror_invalidation_is_exact[munmap]", "6.12") is None  # no tree, no proof
    assert hmm.known_failure("hmm.hmm_device_private.exclusive_cow", "6.12", "madvise", buggy) is None
    assert hmm.known_failure("hmm.hmm_device_private.anon_read", "6.12", "always", buggy) is None


@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_known_failures_hold_for_the_real_trees(series):
    tree = paths.cache_root() / f"src/linux-source-{series}"
    if not (tree / "lib/test_hmm.c").exists():
        pytest.skip(f"{tree} is not unpacked in this cache")
    hmm = drivers.load_driver("test_hmm")
    assert hmm.known_failure("test_dmirror_invalidation_is_exact[mprotect_read]", series, tree=tree)
    assert hmm.known_failure("hmm.hmm_device_private.exclusive", series, "always", tree)


def result(status: str, reason: str = "") -> ktap.TestResult:
    return ktap.TestResult(1, "f.v.t", status, reason, f"#  RUN f.v.t ...\n{status} 1 f.v.t\n")


def test_kernel_verdicts_become_pytest_outcomes():
    drivers.verdict(result("pass"), "", "f.v.t", None)
    drivers.verdict(result("xpass"), "", "f.v.t", None)  # kselftest_harness.h counts XPASS as passed
    with pytest.raises(pytest.skip.Exception, match="kernel: no device"):
        drivers.verdict(result("skip", "no device"), "", "f.v.t", None)
    with pytest.raises(pytest.xfail.Exception, match="kernel: flaky"):
        drivers.verdict(result("xfail", "flaky"), "", "f.v.t", None)
    with pytest.raises(pytest.xfail.Exception, match="known kernel failure: a bug"):
        drivers.verdict(result("fail"), "", "f.v.t", "a bug")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)kernel test f.v.t failed:.*RUN f.v.t"):
        drivers.verdict(result("fail"), "", "f.v.t", None)
    with pytest.raises(pytest.fail.Exception, match="reported no result; its output:\nSegmentation fault"):
        drivers.verdict(None, "Segmentation fault\n", "f.v.t", None)


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
<testcase classname="s" name="a"><properties><property name="outcome" value="PASS"/></properties></testcase>
<testcase classname="s" name="b"><properties><property name="outcome" value="SKIP"/></properties>
  <skipped type="pytest.skip" message="kernel: no device"/></testcase>
<testcase classname="s" name="c"><skipped type="pytest.xfail" message="known kernel failure: x"/></testcase>
{more}
</testsuite></testsuites>
"""


@pytest.mark.parametrize(("more", "status"), [
    ("", "PASS"),
    ('<testcase classname="s" name="d"><properties><property name="outcome" value="FAIL"/></properties>'
     '<failure message="kernel splat(s) during the test: WARNING in warn_write"/></testcase>', "FAIL"),
    ('<testcase classname="s" name="d"><properties><property name="outcome" value="CRASH"/></properties>'
     '<failure message="kernel crashed"/></testcase>'
     '<testcase classname="s" name="e"><failure message="x"/></testcase>', "CRASH"),
    ('<testcase classname="s" name="d"><error message="fixture broke"/></testcase>', "ERROR"),
])
def test_verdict_is_the_worst_outcome(tmp_path: Path, more: str, status: str):
    (tmp_path / "junit.xml").write_text(JUNIT.format(more=more))
    verdict = junit.run_verdict(tmp_path)
    assert verdict.status == status
    assert verdict.counts["XFAIL"] == 1 and verdict.counts["SKIP"] == 1
    assert "XFAIL c: known kernel failure: x" in verdict.notes


def test_verdict_when_nothing_ran(tmp_path: Path):
    (tmp_path / "junit.xml").write_text(
        '<testsuite><testcase classname="s" name="b"><skipped message="CONFIG_MMU_NOTIFIER is not set in this '
        'kernel"/></testcase></testsuite>')
    assert junit.run_verdict(tmp_path).line() == "SKIP (1 skip)"
    assert junit.run_verdict(tmp_path / "none").status == "NONE"


def test_fragment_notes_name_what_the_kernel_lacks():
    hmm = drivers.load_driver("test_hmm")
    assert driver_app.fragment_notes(hmm, "on", "6.12", {"TEST_HMM": "m", "DEVICE_PRIVATE": "y"}, ("selftests",)) == []
    assert driver_app.fragment_notes(hmm, "off", "6.12", {"DEVICE_PRIVATE": "y"}, ("selftests",)) == [
        "fragment mmu-notifier-on.config is not applied on the notifier=off axis",
        "CONFIG_TEST_HMM is not set in this kernel"]


def test_cli_lists_the_drivers(capsys):
    assert harness_cli.main(["driver", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test_hmm +machine default +HMM", out, re.M)
    assert re.search(r"^virtio-gpu +machine virtio-gpu ", out, re.M)


def test_a_profile_fragment_no_axis_applies_is_noted_until_asked_for():
    hmm = drivers.load_driver("test_hmm")
    config = {"TEST_HMM": "m", "DEVICE_PRIVATE": "y"}
    assert driver_app.fragment_notes(hmm, "on", "6.12", config) == [
        "fragment selftests.config is not applied: --fragment selftests builds a kernel with it"]
    assert driver_app.fragment_notes(hmm, "on", "6.12", config, ("selftests",)) == []
