"""Matrix files: expansion, include/exclude, timeouts, stable ids, and one-paragraph errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import paths
from harness.matrix import spec
from harness.matrix.spec import Cell, MatrixError

EVENTS = "suites/test_notifier_events.py"
AXIS = "suites/test_notifier_axis.py"


def load_text(tmp_path: Path, text: str, name: str = "m") -> spec.Matrix:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return spec.load(str(path))


def expand(data: dict, name: str = "m") -> spec.Matrix:
    return spec.expand(data, Path(f"/x/{name}.yaml"))


BASE = {"axes": {"kernel": ["debian:6.12", "debian:6.1"], "notifier": ["on", "off"],
                 "machine": ["default", "virtio-gpu"], "suite": ["notifier_events", "notifier_axis"]}}


def test_product_and_ids():
    m = expand(BASE)
    assert len(m.cells) == 16
    ids = [c.id for c in m.cells]
    assert len(set(ids)) == 16
    assert ids[0] == "6.12-on-default-notifier_events"
    assert "6.1-off-virtio-gpu-notifier_axis" in ids
    cell = m.cells[0]
    assert (cell.kernel, cell.notifier, cell.machine, cell.suite) == ("debian:6.12", "on", "default", EVENTS)


def test_ids_do_not_depend_on_yaml_order(tmp_path: Path):
    a = load_text(tmp_path, """
axes:
  kernel: [debian:6.12, debian:6.1]
  notifier: [on, off]
  machine: [default]
  suite: [notifier_events, notifier_axis]
""", "a")
    b = load_text(tmp_path, """
axes:
  suite: [notifier_axis, notifier_events]
  machine: [default]
  notifier: [off, on]
  kernel: [debian:6.1, debian:6.12]
""", "b")
    assert sorted(c.id for c in a.cells) == sorted(c.id for c in b.cells)
    assert {c.id: c.values() for c in a.cells} == {c.id: c.values() for c in b.cells}


def test_bare_on_off_are_read_as_words(tmp_path: Path):
    # YAML 1.1 turns a bare on/off into true/false; the notifier axis takes them back as words.
    m = load_text(tmp_path, "axes: {notifier: [on, off], suite: [notifier_events]}\n")
    assert [c.notifier for c in m.cells] == ["on", "off"]
    assert [c.kernel for c in m.cells] == ["debian:6.12", "debian:6.12"]  # the defaults
    assert {c.machine for c in m.cells} == {"default"}


def test_suite_names_paths_and_all():
    m = expand({"axes": {"suite": ["notifier_events", AXIS, str(paths.REPO / EVENTS)]}})
    assert [c.suite for c in m.cells] == [EVENTS, AXIS]  # the absolute path is the same file: one cell
    every = expand({"axes": {"suite": ["all"]}})
    assert [c.suite for c in every.cells] == spec.all_suites()
    assert EVENTS in spec.all_suites()


def test_suite_outside_the_repo_keeps_its_path(tmp_path: Path):
    suite = tmp_path / "test_mine.py"
    suite.write_text("def test_x(): pass\n")
    (cell,) = expand({"axes": {"suite": [str(suite)]}}).cells
    assert cell.suite == str(suite)
    assert cell.id == "6.12-on-default-mine"


def test_exclude_and_include():
    data = {**BASE, "exclude": [{"notifier": "off", "suite": "notifier_events"}, {"kernel": "debian:6.1",
                                                                                   "machine": "virtio-gpu"}],
            "include": [{"kernel": "debian:6.1", "notifier": ["on", "off"], "machine": "virtio-gpu",
                         "suite": "notifier_axis"}]}
    ids = {c.id for c in expand(data).cells}
    assert "6.12-off-default-notifier_events" not in ids
    assert "6.12-off-default-notifier_axis" in ids
    assert "6.1-on-virtio-gpu-notifier_events" not in ids
    assert {"6.1-on-virtio-gpu-notifier_axis", "6.1-off-virtio-gpu-notifier_axis"} <= ids
    # 16 - 4 (off x events) - 3 (6.1 x gpu, less the one already gone) + 2 included
    assert len(ids) == 11


def test_timeouts_last_matching_rule_wins():
    data = {**BASE, "timeout": 100, "timeouts": [{"kernel": "debian:6.1", "timeout": 200},
                                                 {"kernel": "debian:6.1", "notifier": False, "timeout": 300}]}
    by_id = {c.id: c.timeout_s for c in expand(data).cells}
    assert by_id["6.12-on-default-notifier_events"] == 100
    assert by_id["6.1-on-default-notifier_events"] == 200
    assert by_id["6.1-off-default-notifier_events"] == 300


def test_the_arch_axis_names_its_cells_and_their_kernels():
    m = expand({"axes": {"kernel": ["debian:7.3"], "arch": ["x86_64", "arm64"], "machine": ["numa2"],
                         "suite": ["notifier_events"]}})
    assert [c.id for c in m.cells] == ["7.3-on-numa2-notifier_events", "7.3-arm64-on-numa2-notifier_events"]
    arm = m.cells[1]
    assert arm.arch == "arm64" and Cell.from_json(arm.to_json()) == arm
    assert arm.build_reproducer() == "harness kernel --kernel-src debian:7.3 --arch arm64 --notifier on"
    assert m.cells[0].build_reproducer() == "harness kernel --kernel-src debian:7.3 --notifier on"  # as before
    # a machine an architecture has no profile of is refused for that architecture's cells
    with pytest.raises(MatrixError, match=r"7.3-arm64-on-kvm-selftests-notifier_events asks for machine "
                                          r"'kvm-selftests', which has no arm64 profile"):
        expand({"axes": {"kernel": ["debian:7.3"], "arch": ["arm64"], "machine": ["kvm-selftests"],
                         "suite": ["notifier_events"]}})
    with pytest.raises(MatrixError, match="unknown value 'riscv64' for axis arch"):
        expand({"axes": {"arch": ["riscv64"], "suite": ["notifier_events"]}})


def test_reproducers():
    cell = Cell("debian:6.12", "off", "default", EVENTS)
    assert cell.reproducer() == "harness run --kernel-src debian:6.12 --notifier off --machine default " + EVENTS
    assert cell.reproducer(f"{EVENTS}::test_munmap") == (
        f"harness run --kernel-src debian:6.12 --notifier off --machine default {EVENTS} -k test_munmap")
    assert cell.reproducer(f"{EVENTS}::test_x[a-b]") == (
        f"harness run --kernel-src debian:6.12 --notifier off --machine default '{EVENTS}::test_x[a-b]'")
    assert cell.build_reproducer() == "harness kernel --kernel-src debian:6.12 --notifier off"


def test_select_cells():
    m = expand(BASE)
    assert [c.id for c in m.select(["6.1-off-default-notifier_axis"])] == ["6.1-off-default-notifier_axis"]
    assert len(m.select([])) == 16
    with pytest.raises(MatrixError, match="no cell 'nope'"):
        m.select(["nope"])


@pytest.mark.parametrize(("data", "needle"), [
    ({"axes": {**BASE["axes"], "machine": ["default", "no-such"]}}, "unknown value 'no-such' for axis machine"),
    ({"axes": {**BASE["axes"], "notifier": ["maybe"]}}, "unknown value 'maybe' for axis notifier"),
    ({"axes": {**BASE["axes"], "kernel": [6.12]}}, "axes.kernel[0]: expected a safe name or path (letters, "
     "digits, _ . , + : / @ % = -; no leading -), found the number 6.12 (quote it)"),
    ({"axes": {**BASE["axes"], "suite": ["no_such_suite"]}}, "unknown suite 'no_such_suite'"),
    ({"axes": {**BASE["axes"], "colour": ["red"]}}, "axes.colour: unknown key(s) ['colour']"),
    ({"axes": {"kernel": ["debian:6.12"]}}, "axes.suite: must be given"),
    ({"axes": {**BASE["axes"], "suite": []}}, "axes.suite: expected a safe name or path (letters, digits, "
     "_ . , + : / @ % = -; no leading -), or a non-empty list of them, found a list of 0"),
    ({**BASE, "exclude": [{"notifier": "of"}]}, "unknown value 'of' for axis notifier"),
    ({**BASE, "exclude": [{"machine": "kvm-less"}]}, "unknown value 'kvm-less' for axis machine"),
    ({**BASE, "exclude": [{"kernel": "debian:6.6"}]}, "exclude[0].kernel: unknown value 'debian:6.6' for axis kernel"),
    ({**BASE, "exclude": [{"notifier": ["on", "off"]}]}, "removes every remaining cell"),
    ({**BASE, "exclude": [{"notifier": "on"}, {"notifier": "on"}]},
     "exclude[1]: the exclude rule {'notifier': ['on']} matches no"),
    ({**BASE, "include": [{"kernel": "debian:6.12", "notifier": "on"}]}, "include[0].machine: must be given"),
    ({**BASE, "timeouts": [{"kernel": "debian:6.1"}]}, "timeouts[0].timeout: must be given"),
    ({**BASE, "timeout": -5}, "timeout: expected a positive number of seconds"),
    ({**BASE, "exculde": []}, "unknown key(s) ['exculde']"),
    ([1, 2], "expected a mapping"),
])
def test_invalid_matrices(data, needle: str):
    with pytest.raises(MatrixError) as e:
        expand(data)
    assert needle in str(e.value)
    assert str(e.value).startswith("/x/m.yaml")


def test_malformed_yaml(tmp_path: Path):
    with pytest.raises(MatrixError, match=r"is not valid YAML: .*line 2"):
        load_text(tmp_path, "axes:\n  suite: [notifier_events\n")


def test_unknown_matrix_name():
    with pytest.raises(MatrixError, match=r"unknown matrix .nope.: .*known: .*nightly"):
        spec.load("nope")


def test_kernel_ids():
    assert spec.kernel_id("debian:6.1") == "6.1"
    assert spec.kernel_id("/src/linux-next") == "linux_next"


@pytest.mark.parametrize("name", ["nightly", "smoke"])
def test_shipped_matrices(name: str):
    m = spec.load(name)
    ids = [c.id for c in m.cells]
    assert len(ids) == len(set(ids))
    if name == "nightly":
        assert {c.kernel for c in m.cells} == {"debian:6.12", "debian:6.1", "debian:7.3"}
        assert {c.notifier for c in m.cells} == {"on", "off"}
        assert {c.machine for c in m.cells} == {"default", "virtio-gpu"}
        assert {c.suite for c in m.cells} == set(spec.all_suites())
    else:
        assert {(c.kernel, c.machine) for c in m.cells} == {("debian:6.12", "default")}
        assert {c.notifier for c in m.cells} == {"on", "off"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_list():
    proc = cli("matrix", "list", "smoke", "--ids")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [c.id for c in spec.load("smoke").cells]
    proc = cli("matrix", "list", "smoke")
    assert "harness run --kernel-src debian:6.12 --notifier off --machine default" in proc.stdout


@pytest.mark.parametrize(("text", "needle"), [
    ("axes: {suite: [notifier_events], machine: [gpu9000]}\n", "unknown value 'gpu9000' for axis machine"),
    ("axes: {suite: [nope]}\n", "unknown suite 'nope'"),
    ("axes: {notifier: [on], suite: [notifier_events]}\nexclude: [{notifier: on}]\n", "would be empty"),
    ("axes: [\n", "is not valid YAML"),
])
def test_cli_errors_are_one_paragraph(tmp_path: Path, text: str, needle: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for args in (["matrix", "list", str(path)], ["matrix", "run", str(path)],
                 ["matrix", "export", str(path), "--ci", "github"]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith(f"harness: {path}"), proc.stderr
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_yaml_round_trip_of_cells():
    cell = expand(BASE).cells[3]
    assert Cell.from_json(yaml.safe_load(yaml.safe_dump(cell.to_json()))) == cell


def test_fragment_axis_names_its_cells_and_leaves_the_others_as_they_were():
    data = {"axes": {"kernel": ["debian:6.12"], "notifier": ["on"], "fragment": ["none", "debug/kasan"],
                     "suite": ["notifier_events"]}}
    ids = [c.id for c in expand(data).cells]
    assert ids == ["6.12-on-default-notifier_events", "6.12-on-kasan-default-notifier_events"]
    kasan = expand(data).select(["6.12-on-kasan-default-notifier_events"])[0]
    assert kasan.reproducer() == ("harness run --kernel-src debian:6.12 --notifier on --fragment debug/kasan "
                                  f"--machine default {EVENTS}")
    assert kasan.build_reproducer() == "harness kernel --kernel-src debian:6.12 --notifier on --fragment debug/kasan"
    assert Cell.from_json(kasan.to_json()) == kasan


def test_fragment_in_include_and_exclude():
    data = {**BASE, "exclude": [{"fragment": "none", "kernel": "debian:6.1"}],
            "include": [{"kernel": "debian:6.12", "notifier": "on", "fragment": "debug/kasan", "machine": "default",
                         "suite": "notifier_events"}]}
    ids = [c.id for c in expand(data).cells]
    assert not [i for i in ids if i.startswith("6.1-")]
    assert ids[-1] == "6.12-on-kasan-default-notifier_events"
    assert len(ids) == 9  # 8 cells of 6.12 without a fragment, and the include


def test_unknown_fragment_is_one_paragraph():
    with pytest.raises(MatrixError, match=r"axis fragment: cannot read config file debug/nope"):
        expand({"axes": {**BASE["axes"], "fragment": ["debug/nope"]}})
