"""The schemas every YAML file is read through (harness/schema.py, harness/configs.py): each kind of mistake is
refused when the file loads, with an error that names the file, the line and the key path; and every file
shipped in configs/ loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import configs, paths, schema
from harness.checks import drivers, expectations, workloads
from harness.errors import UserError
from harness.kernel import build, debian, image
from harness.kernel.arch import load_arch
from harness.matrix import spec
from harness.results import compare
from harness.vm import machine

# --- every shipped file ----------------------------------------------------------------------------------------


def test_every_yaml_file_in_configs_has_a_schema():
    covered = {p for kind in configs.KINDS for p in paths.CONFIGS.glob(kind.files)}
    every = set(paths.CONFIGS.rglob("*.yaml")) | set(paths.CONFIGS.rglob("*.yml"))
    assert every and every <= covered, sorted(map(str, every - covered))


@pytest.mark.parametrize("path", sorted(p for kind in configs.KINDS for p in paths.CONFIGS.glob(kind.files)),
                         ids=lambda p: str(p.relative_to(paths.CONFIGS)))
def test_every_shipped_file_loads(path: Path):
    (kind,) = [k for k in configs.KINDS if path in paths.CONFIGS.glob(k.files)]
    assert kind.read(path) is not None


def test_the_reference_names_every_key_of_every_schema():
    text = configs.markdown()
    for kind in (*configs.KINDS, configs.EXPECT_EVENTS):
        for record in _records(kind.schema):
            for key in record.fields:
                assert f"| `{key}` |" in text, (kind.title, key)


def _records(t: schema.Type) -> list[schema.Record]:
    return [r for _, r in schema.records(t)] + [n for _, r in schema.records(t) for f in r.fields.values()
                                                 for n in _records(f.type) if n is not r]


# --- the validator ----------------------------------------------------------------------------------------------

RUN = schema.Record({
    "program": schema.required(schema.Str()),
    "args": schema.optional(schema.ListOf(schema.Str()), []),
    "timeout": schema.optional(schema.Number(positive=True), 300.0),
})
FILE = schema.Record({"runs": schema.required(schema.ListOf(RUN)), "name": schema.optional(schema.Str(), "")})


class Bad(UserError):
    pass


def load(tmp_path: Path, text: str, t: schema.Type = FILE) -> schema.Document:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    return schema.load(path, t, Bad)


def error(tmp_path: Path, text: str, t: schema.Type = FILE) -> str:
    with pytest.raises(Bad) as e:
        load(tmp_path, text, t)
    return str(e.value)


def test_a_good_file_has_its_defaults_filled_in(tmp_path: Path):
    doc = load(tmp_path, "runs:\n  - {program: a}\n  - {program: b, args: [-x], timeout: 5}\n")
    assert doc.data == {"runs": [{"program": "a", "args": [], "timeout": 300.0},
                                 {"program": "b", "args": ["-x"], "timeout": 5.0}], "name": ""}


def test_defaults_are_not_shared_between_files(tmp_path: Path):
    first = load(tmp_path, "runs: [{program: a}]\n").data
    first["runs"][0]["args"].append("changed")
    assert load(tmp_path, "runs: [{program: a}]\n").data["runs"][0]["args"] == []


def test_a_string_where_a_list_belongs_is_not_iterated(tmp_path: Path):
    message = error(tmp_path, "runs:\n  - program: a\n    args: -x -y\n")
    assert message == (f"{tmp_path}/f.yaml:3: runs[0].args: expected a list, each a string (not empty), found the "
                       "string '-x -y' (write [-x -y] or one `- item` per line)")


def test_an_unknown_key_is_named_with_its_line(tmp_path: Path):
    message = error(tmp_path, "runs:\n  - program: a\n\n    argz: [-x]\n")
    assert message.startswith(f"{tmp_path}/f.yaml:4: runs[0].argz: unknown key(s) ['argz']; allowed: ")


def test_a_wrong_type_says_what_was_expected_and_found(tmp_path: Path):
    assert error(tmp_path, "runs: [{program: a, timeout: soon}]\n") == (
        f"{tmp_path}/f.yaml:1: runs[0].timeout: expected a positive number, found the string 'soon'")
    assert "runs[0].program: expected a string (not empty), found the number 6.1 (quote it)" in error(
        tmp_path, "runs: [{program: 6.10}]\n")  # YAML's 6.10 is the number 6.1: quoting is the fix
    assert "runs[0].program: expected a string (not empty), found the boolean true" in error(
        tmp_path, "runs: [{program: on}]\n")


def test_a_missing_key_and_a_wrong_top_level(tmp_path: Path):
    assert error(tmp_path, "runs: [{args: []}]\n") == (
        f"{tmp_path}/f.yaml:1: runs[0].program: must be given: a string (not empty)")
    assert "f.yaml:1: the top level: expected a mapping {runs, name?}, found a list of 1" in error(tmp_path, "- x\n")
    assert "f.yaml: the top level: expected a mapping" in error(tmp_path, "")


def test_a_key_given_twice_is_refused(tmp_path: Path):
    assert error(tmp_path, "runs: []\nname: a\nname: b\n") == (
        f"{tmp_path}/f.yaml:2: name: given twice (here and on line 3): YAML would keep the last one")
    assert "f.yaml:2: runs[0].program: given twice (here and on line 3)" in error(
        tmp_path, "runs:\n  - program: a\n    program: b\n")


def test_malformed_yaml_names_the_file(tmp_path: Path):
    assert re.match(rf"{tmp_path}/f.yaml is not valid YAML: .*line 2, column 1", error(tmp_path, "runs: [\n"))


def test_key_paths_quote_keys_that_are_not_words():
    assert schema.key_path(("known_failures", 2, "tests")) == "known_failures[2].tests"
    assert schema.key_path(("cases", "munmap/whole", "expect", 0)) == "cases['munmap/whole'].expect[0]"
    assert schema.key_path(()) == "the top level"


def test_either_reports_the_deepest_misfit(tmp_path: Path):
    t = schema.Record({"runs": schema.required(schema.ListOf(schema.Either((schema.Str(), RUN))))})
    assert load(tmp_path, "runs: [a, {program: b}]\n", t).data["runs"][0] == "a"
    assert "runs[1].timeout: expected a positive number, found the number -1" in error(
        tmp_path, "runs: [a, {program: b, timeout: -1}]\n", t)
    assert "runs[0]: expected a string (not empty) or a mapping {program, args?, timeout?}, found the number 3" in (
        error(tmp_path, "runs: [3]\n", t))


def test_one_or_list_enum_pattern_and_unique(tmp_path: Path):
    t = schema.Record({"of": schema.required(schema.OneOrList(schema.Enum(("a", "b")), unique=True)),
                       "id": schema.optional(schema.Str(r"[a-z]+", "a lower-case word"), "x")})
    assert load(tmp_path, "of: a\n", t).data == {"of": ["a"], "id": "x"}
    assert "of[1]: 'a' is given twice" in error(tmp_path, "of: [a, a]\n", t)
    assert "of[0]: expected one of a, b, found the string 'c'" in error(tmp_path, "of: c\n", t)
    assert "id: expected a lower-case word, found the string 'A1'" in error(tmp_path, "of: a\nid: A1\n", t)
    assert "True: unknown key(s) ['True']" in error(tmp_path, "on: a\n", t)  # YAML's `on:` is the key True


# --- machine profiles -------------------------------------------------------------------------------------------


@pytest.fixture
def machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "machines").mkdir()
    monkeypatch.setattr(machine.paths, "CONFIGS", tmp_path)
    return tmp_path / "machines"


def test_machine_append_as_a_string_is_refused(machines: Path):
    """The reproduced bug: `append: "console=ttyS0"` became c o n s o l e ... on the kernel command line."""
    (machines / "m.yaml").write_text("description: x\nappend: console=ttyS0,115200\n")
    with pytest.raises(machine.MachineError) as e:
        machine.load_profile("m")
    assert str(e.value).startswith(f"{machines}/m.yaml:2: append: expected a list, each a kernel parameter without "
                                   "spaces, found the string 'console=ttyS0,115200'")


@pytest.mark.parametrize(("text", "needle"), [
    ("cpus: two\n", "m.yaml:1: cpus: expected an integer >= 1, found the string 'two'"),
    ("memory_mib: 1.5\n", "m.yaml:1: memory_mib: expected an integer >= 64, found the number 1.5"),
    ("devices: [virtio-gpu-pci, 'a b']\n", "m.yaml:1: devices[1]: expected a word without spaces, found the string"),
    ("cpu: max\nram: 2\n", "m.yaml:2: ram: unknown key(s) ['ram']"),
])
def test_machine_profile_mistakes(machines: Path, text: str, needle: str):
    (machines / "m.yaml").write_text(text)
    with pytest.raises(machine.MachineError, match=re.escape(needle)):
        machine.load_profile("m")


# --- driver profiles --------------------------------------------------------------------------------------------

HMM = "machine: default\nsuites: [suites/test_hmm.py]\n"
SELFTESTS = "machine: default\nsuites: [suites/test_mm_selftests.py]\nprograms: [mremap_test, {program: cow}]\n"


def driver_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    monkeypatch.setattr(drivers, "DRIVERS", tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(drivers.DriverError) as e:
        drivers.load_driver("bad")
    return str(e.value).removeprefix(f"{tmp_path}/")


def test_known_failure_tests_as_a_string_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The reproduced bug: `tests: "x"` was iterated as patterns, one of which could be "*": every failure of the
    driver turned into an xfail."""
    message = driver_error(tmp_path, monkeypatch, HMM + "known_failures:\n  - tests: 'hmm.*'\n    reason: r\n")
    assert message.startswith("bad.yaml:4: known_failures[0].tests: expected a non-empty list, each a test-name "
                              "pattern with a word in it (not a bare wildcard), found the string 'hmm.*'")


@pytest.mark.parametrize("pattern", ["*", "?*", "", "*: *", "[a-z]*"])
def test_a_bare_wildcard_known_failure_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str):
    message = driver_error(tmp_path, monkeypatch, HMM + f"known_failures:\n  - {{tests: ['{pattern}'], reason: r}}\n")
    assert message.startswith(f"bad.yaml:4: known_failures[0].tests[0]: expected a test-name pattern with a word "
                              f"in it (not a bare wildcard), found the string {pattern!r}")


@pytest.mark.parametrize(("text", "pattern"), [
    (HMM, "test_dmirror_invalidaton_is_exact*"),  # a typo of a test function's name
    (SELFTESTS, "mremap: 2GB mremap - *"),  # no program run has the id mremap
    (HMM, "odp-copy"),  # a name rxe's suite asks about, not test_hmm's
])
def test_a_pattern_that_names_no_test_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                                 pattern: str):
    message = driver_error(tmp_path, monkeypatch, text + f"known_failures:\n  - tests: [a_test, '{pattern}']\n"
                                                         "    reason: r\n")
    where = "bad.yaml:5" if text == SELFTESTS else "bad.yaml:4"
    assert message.startswith(f"{where}: known_failures[0].tests[0]: 'a_test' matches no test of ")
    message = driver_error(tmp_path, monkeypatch, text + f"known_failures:\n  - tests: ['{pattern}']\n    reason: r\n")
    assert message.startswith(f"{where}: known_failures[0].tests[0]: {pattern!r} matches no test of ")


def test_patterns_may_name_test_functions_program_runs_and_names_the_suites_ask_about(tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(drivers, "DRIVERS", tmp_path)
    (tmp_path / "ok.yaml").write_text(
        "machine: default\nsuites: [suites/test_mm_selftests.py, suites/test_rxe.py]\nprograms: [mremap_test]\n"
        "known_failures:\n  - tests: ['mremap_test: 2GB *', mremap_test, odp-copy, test_perftest*, 'x.*.y']\n"
        "    reason: r\n")
    profile = drivers.load_driver("ok")
    # the kselftest_harness name is the tree's: left for the suite to check when it has collected them
    assert [p for p, _ in profile.kernel_test_patterns] == ["x.*.y"]
    assert profile.kernel_test_patterns[0][1] == f"{tmp_path}/ok.yaml:5: known_failures[0].tests[4]"


def test_kernel_test_patterns_must_match_a_test_of_the_tree():
    profile = drivers.load_driver("test_hmm")
    tests = ["hmm.hmm_device_private.exclusive", "hmm.hmm_device_private.exclusive_mprotect",
             "hmm.hmm_device_coherent.exclusive_cow"]
    drivers.check_kernel_tests(profile, tests)
    with pytest.raises(drivers.DriverError) as e:
        drivers.check_kernel_tests(profile, tests[:2])
    assert re.match(r".*/configs/drivers/test_hmm\.yaml:\d+: known_failures\[0\]\.tests\[2\]: 'hmm\.\*\.exclusive_cow' "
                    r"matches none of the 2 kernel tests of this tree", str(e.value))


def test_an_unknown_need_is_refused_and_the_known_ones_come_from_the_code(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    assert workloads.setup_names() == sorted(n.removeprefix("_") for n in dir(workloads.GuestSetup)
                                             if n.startswith("_") and not n.startswith("__"))
    assert {"swap", "numa", "ksm_unmerged"} <= set(workloads.setup_names())
    message = driver_error(tmp_path, monkeypatch, SELFTESTS.replace("{program: cow}", "{program: cow, needs: [zwap]}"))
    assert message.startswith("bad.yaml:3: programs[1].needs[0]: expected a guest setup of "
                              "harness/checks/workloads.py: hugepages, ksm, ")
    assert message.endswith(", found the string 'zwap'")


def test_every_need_named_anywhere_is_a_setup():
    setups = set(workloads.setup_names())
    needs = {n for name in drivers.known_drivers() for r in drivers.load_driver(name).programs for n in r.needs}
    needs |= {n for case in expectations.load("").values() for n in case.needs}
    assert needs and needs <= setups


@pytest.mark.parametrize(("text", "needle"), [
    ("known_failures: [{tests: [test_x], reason: r, code: {file: ../../etc/passwd, contains: root}}]\n",
     "known_failures[0].code.file: expected a path inside the tree"),
    ("known_failures: [{tests: [test_x], reason: r, series: [6.1]}]\n",
     "known_failures[0].series[0]: expected a kernel series \"X.Y\" (quoted), found the number 6.1"),
    ("module: 'rdma_rxe; reboot'\n", "module: expected a module name or null"),
])
def test_driver_values_that_would_leave_their_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text, needle):
    assert needle in driver_error(tmp_path, monkeypatch, HMM + text)


# --- matrices ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("axes", "key"), [
    ("suite: ['notifier_events; touch /tmp/x']", "axes.suite[0]"),
    ("suite: [notifier_events]\nfragment: ['debug/kasan$(id)']", "axes.fragment[0]"),
    ("suite: [notifier_events]\nkernel: ['/src/my linux']", "axes.kernel[0]"),
    ("suite: [notifier_events]\nmachine: [-default]", "axes.machine[0]"),
    ("suite: [--collect-only]", "axes.suite[0]"),
    ("suite: ['`id`']", "axes.suite[0]"),
])
def test_unsafe_matrix_names_are_refused_at_load(tmp_path: Path, axes: str, key: str):
    path = tmp_path / "m.yaml"
    path.write_text("axes:\n" + "".join(f"  {line}\n" for line in axes.splitlines()))
    with pytest.raises(spec.MatrixError) as e:
        spec.load(str(path))
    assert str(e.value).startswith(f"{path}:")
    assert f": {key}: expected a " in str(e.value) and "found the string" in str(e.value)


def test_a_cell_id_from_an_odd_file_name_is_refused(tmp_path: Path):
    suite = tmp_path / "test_x,y.py"  # a safe path, but a comma has no place in a directory or job name
    suite.write_text("def test_x(): pass\n")
    with pytest.raises(spec.MatrixError, match=r"would have the id '6\.12-on-default-x,y', which is no safe name"):
        spec.expand({"axes": {"suite": [str(suite)]}}, tmp_path / "m.yaml")


def test_matrix_rules_name_their_key(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text("axes:\n  suite: [notifier_events]\nexclude:\n  - {}\ntimeouts:\n  - {timeout: 5}\n")
    with pytest.raises(spec.MatrixError, match=re.escape(f"{path}:4: exclude[0]: a rule names one or more axes")):
        spec.load(str(path))


# --- the other files --------------------------------------------------------------------------------------------


def test_expectation_mistakes_name_the_case(tmp_path: Path):
    path = tmp_path / "e.yaml"
    path.write_text("source: '6.12'\ncases:\n  munmap/whole:\n    run: munmap whole\n")
    with pytest.raises(expectations.ExpectationError) as e:
        expectations.load("6.12", path)
    assert str(e.value).startswith(f"{path}:4: cases['munmap/whole'].run: expected a non-empty list")
    path.write_text("source: 6.12\ncases: {}\n")
    with pytest.raises(expectations.ExpectationError, match=r"e\.yaml:1: source: expected a kernel series"):
        expectations.load("6.12", path)


def test_versions_replace_expect_and_why(tmp_path: Path):
    path = tmp_path / "e.yaml"
    path.write_text("source: '6.12'\ncases:\n  c:\n    run: [p]\n    why: new\n    expect: []\n"
                    "    versions:\n      '6.1': {why: old, expect: [{event: UNMAP, range: r, relation: equal, "
                    "site: s, count: 1}]}\n")
    assert (expectations.load("6.12", path)["c"].why, expectations.load("6.12", path)["c"].expect) == ("new", ())
    old = expectations.load("6.1", path)["c"]
    assert (old.why, old.basis, [e.event for e in old.expect]) == ("old", "6.1", ["UNMAP"])


@pytest.mark.parametrize(("loader", "text", "needle"), [
    (lambda p: debian.load_suites(p), "suites:\n  - {suite: 'trixie\\nTypes: deb-src', keyring: /k.gpg}\n",
     "suites[0].suite: expected a suite name"),
    (lambda p: debian.load_suites(p), "suites:\n  - {suite: trixie, keyring: k.gpg}\n",
     "suites[0].keyring: expected the absolute path of a keyring"),
    (lambda p: image.userspace_files(load_arch(), config=p), "files:\n  - {path: /bin/true, pakage: coreutils}\n",
     "files[0].pakage: unknown key(s) ['pakage']"),
    (lambda p: compare.load_expected(p), "changes:\n  - {case: 'x/*', to: [CLEAR]}\n",
     "changes[0].to: expected an event name (CLEAR or MMU_NOTIFY_CLEAR) or null, found a list of 1"),
    (lambda p: schema.load(p, build.ESTIMATES_SCHEMA, build.BuildError),
     "- {series: '6.12', config: 01d7ac441b79f49d, what: x, steps: 10, seconds: '500'}\n",
     "[0].seconds: expected a positive number, found the string '500'"),
])
def test_the_small_files(tmp_path: Path, loader, text: str, needle: str):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        loader(path)
    assert str(e.value).startswith(f"{path}:2: " if text.count("\n") > 1 else f"{path}:1: "), str(e.value)
    assert needle in str(e.value)
