"""`harness report --kcidb`: a matrix run, a `harness run` and a `harness compare` directory as KCIDB v5.3
documents, validated with kcidb-io (KernelCI's own schema package), their references checked, and our outcomes
mapped to KCIDB's statuses."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import jsonschema
import kcidb_io
import pytest

from harness.cli.main import main
from harness.kernel.build import STAMP
from harness.kernel.patches import TREE_STAMP
from harness.matrix.spec import Cell
from harness.results import kcidb
from harness.results.model import Result, write_results
from harness.results.outcome import Outcome
from harness.results.rundir import RunDir
from tests.test_report import C_61, C_AXIS, C_ON, fabricate

SHA = "0123456789abcdef0123456789abcdef01234567"


def valid(doc: dict) -> dict:
    """Schema-valid (kcidb-io's v5.3) and whole: unique ids, every build's checkout and test's build present."""
    kcidb_io.schema.V5_3.validate(doc)
    assert doc["version"] == {"major": 5, "minor": 3}
    for kind in ("checkouts", "builds", "tests"):
        ids = [x["id"] for x in doc[kind]]
        assert len(ids) == len(set(ids)), f"duplicate {kind} ids"
        assert all(x["origin"] == kcidb.ORIGIN and x["id"].startswith(f"{kcidb.ORIGIN}:") for x in doc[kind])
    checkouts = {c["id"] for c in doc["checkouts"]}
    builds = {b["id"] for b in doc["builds"]}
    assert all(b["checkout_id"] in checkouts for b in doc["builds"])
    assert all(t["build_id"] in builds for t in doc["tests"])
    return doc


def plain_run(root: Path, identity: str, tree: Path, build_dir: Path, tests: dict[str, str]) -> Path:
    """A `harness run` directory as the pytest plugin leaves it (kernel.json, outcomes.json, console, dmesg)."""
    d = RunDir.make(root)
    results = []
    for name, outcome in tests.items():
        nodeid = f"suites/test_events.py::{name}"
        tdir = d.test_dir(nodeid)
        tdir.mkdir(parents=True)
        (tdir / "dmesg.txt").write_text("[    1.0] ok\n")
        (tdir / "events.json").write_text(json.dumps([{"kind": "start", "event": "PROTECTION_VMA"},
                                                      {"kind": "end", "event": "PROTECTION_VMA"}]))
        results.append(Result(nodeid, Outcome(outcome), "" if outcome == "PASS" else "said no", 0.5,
                              console_log=str(root / "vm-1/console.log"), dmesg=str(tdir / "dmesg.txt")))
    write_results(d.outcomes, results)
    (root / "vm-1").mkdir()
    (root / "vm-1/console.log").write_text("console\n")
    (root / "kernel.config").write_text("CONFIG_MMU_NOTIFIER=y\n")
    d.kernel_json.write_text(json.dumps({"tree": str(tree), "identity": identity, "build_dir": str(build_dir),
                                         "release": "6.12.117", "notifier": "on", "fragments": []}))
    return root


def test_a_matrix_run(tmp_path: Path):
    run = fabricate(tmp_path / "nightly" / "20261128-020000", munmap="FAIL", build_61=True, infra=True)
    doc = valid(kcidb.document(run))
    tests = {(t["misc"]["cell"], t["misc"]["test"].rsplit("::", 1)[-1]): t for t in doc["tests"]}
    munmap = tests[C_ON.id, "test_munmap"]
    assert munmap["status"] == "FAIL" and munmap["path"] == "mmu_notifier.notifier_events.munmap"
    assert munmap["number"] == {"value": 3, "unit": "invalidations"}
    assert munmap["misc"]["events"] == {"UNMAP": 2, "CLEAR": 1}
    assert tests[C_AXIS.id, "test_kallsyms"]["status"] == "MISS", "INFRA: the test never ran for want of a guest"
    assert tests[C_61.id, "cell"]["status"] == "ERROR", "a cell whose kernel did not build still reports"
    failed = [b for b in doc["builds"] if b["status"] == "FAIL"]
    assert len(failed) == 1 and "mm/x.c: error" in failed[0]["log_excerpt"]
    assert {b["config_name"] for b in doc["builds"]} == {"tinyconfig+base+drivers+notifier_on",
                                                        "tinyconfig+base+drivers+notifier_off"}
    assert all(t["id"].startswith(f"{kcidb.ORIGIN}:20261128-020000/") for t in doc["tests"])


def test_a_harness_run_of_a_git_tree(tmp_path: Path):
    build_dir = tmp_path / "cache/builds/6.12.117-abcdef0123456789"
    build_dir.mkdir(parents=True)
    (build_dir / STAMP).write_text(json.dumps({"build_s": 512.5, "ccache": {"hits": 3, "misses": 9}}))
    run = plain_run(tmp_path / "results/20261128-090000", f"git:{SHA}-dirty", tmp_path / "linux", build_dir,
                    {"test_mprotect[rw-ro]": "PASS", "test_cow": "XFAIL", "test_hang": "TIMEOUT"})
    # The evidence suite's mirror counters, as guest.save() keeps the probe's `mirror` line per mode
    cow_dir = RunDir(run).test_dir("suites/test_events.py::test_cow")
    (cow_dir / "cow-ro-blind.txt").write_text("id=0 pid=7 start=0x1000 end=0x3000 perm=ro mode=blind received=8 "
                                              "acted=8 refaults=4 stale=0 events=PROTECTION_VMA:8:0,\n")
    (cow_dir / "cow-ro-context.txt").write_text("id=0 pid=8 perm=ro mode=context received=8 acted=0 refaults=0\n")
    doc = valid(kcidb.document(run, url_base="https://lab.example/runs/20261128-090000"))
    (checkout,) = doc["checkouts"]
    assert checkout["git_commit_hash"] == SHA and checkout["misc"]["dirty"] is True
    (build,) = doc["builds"]
    assert build["duration"] == 512.5 and build["id"].endswith(":abcdef0123456789")
    assert build["config_url"] == "https://lab.example/runs/20261128-090000/kernel.config"
    by_path = {t["path"]: t for t in doc["tests"]}
    assert set(by_path) == {"mmu_notifier.events.mprotect_rw-ro", "mmu_notifier.events.cow",
                            "mmu_notifier.events.hang"}
    assert by_path["mmu_notifier.events.cow"]["status"] == "PASS"
    assert by_path["mmu_notifier.events.cow"]["misc"]["outcome"] == "XFAIL"
    cow = by_path["mmu_notifier.events.cow"]
    assert cow["number"] == {"value": 0, "unit": "re-faults"}, "what the mirror that honours the event re-faults"
    assert cow["misc"]["evidence"]["blind"] == {"id": 0, "pid": 7, "perm": "ro", "mode": "blind", "received": 8,
                                                "acted": 8, "refaults": 4, "stale": 0,
                                                "events": "PROTECTION_VMA:8:0,"}
    assert by_path["mmu_notifier.events.hang"]["number"] == {"value": 1, "unit": "invalidations"}
    assert by_path["mmu_notifier.events.hang"]["status"] == "ERROR"
    assert by_path["mmu_notifier.events.mprotect_rw-ro"]["output_files"][0]["url"].startswith(
        "https://lab.example/runs/20261128-090000/tests/")


def test_a_compare_run(tmp_path: Path):
    base_id = "debian:linux-source-6.12=6.12.117-1~deb12u1"
    out = tmp_path / "results/20261128-100000"
    out.mkdir(parents=True)
    (out / "compare.json").write_text("{}")
    patched_tree = tmp_path / "cache/src/patched/k1"
    patched_tree.mkdir(parents=True)
    (patched_tree / TREE_STAMP).write_text(json.dumps({"identity": f"{base_id}+k1", "base_identity": base_id,
                                                       "patches": [{"origin": "0001.patch", "subject": "mm: x"}]}))
    plain_run(out / "base/suites", base_id, tmp_path / "cache/src/linux-source-6.12",
              tmp_path / "cache/builds/6.12.117-1111111111111111", {"test_munmap": "PASS"})
    plain_run(out / "patched/suites", f"{base_id}+k1", patched_tree,
              tmp_path / "cache/builds/6.12.117-2222222222222222", {"test_munmap": "FAIL"})
    doc = valid(kcidb.document(out))
    assert len(doc["checkouts"]) == 2 and len(doc["builds"]) == 2 and len(doc["tests"]) == 2
    patched = next(c for c in doc["checkouts"] if c["comment"].endswith("+k1"))
    assert patched["misc"]["patches"] == [{"origin": "0001.patch", "subject": "mm: x"}]
    assert "patchset_hash" not in patched, "no per-patch sha256 recorded: no hash can be claimed"
    base = next(c for c in doc["checkouts"] if c["comment"] == base_id)
    assert base["patchset_hash"] == "", "KCIDB: the empty string for no patches"

    # Where the patched tree recorded each patch's sha256, the patchset hash is KCIDB's:
    # `sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64`
    texts = ["From a\n--- a/mm/x.c\n", "From b\n--- a/mm/y.c\n"]
    sums = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    (patched_tree / TREE_STAMP).write_text(json.dumps({
        "identity": f"{base_id}+k1", "base_identity": base_id,
        "patches": [{"origin": f"000{n}.patch", "subject": "mm", "sha256": h} for n, h in enumerate(sums, 1)]}))
    shell = subprocess.run(["sh", "-c", "sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64"],
                           cwd=_write_patches(tmp_path / "series", texts), capture_output=True, text=True, check=True)
    patched = next(c for c in valid(kcidb.document(out))["checkouts"] if c["comment"].endswith("+k1"))
    assert patched["patchset_hash"] == shell.stdout.strip()
    assert all(c["tree_name"] == "debian-linux-source-6.12" for c in doc["checkouts"])
    statuses = {t["id"].split("/")[1]: t["status"] for t in doc["tests"]}
    assert statuses == {"base": "PASS", "patched": "FAIL"}

    # The command line: the document written, and a compare directory needs no report.html of its own
    dest = tmp_path / "kcidb.json"
    assert main(["report", str(out), "--kcidb", str(dest)]) == 0
    valid(json.loads(dest.read_text()))
    assert not (out / "report.html").exists()


def _write_patches(d: Path, texts: list[str]) -> Path:
    d.mkdir()
    for n, text in enumerate(texts, 1):
        (d / f"000{n}.patch").write_text(text)
    return d


def test_the_schema_is_really_applied(tmp_path: Path):
    doc = valid(kcidb.document(fabricate(tmp_path / "r")))
    doc["tests"][0]["status"] = "XFAIL"  # our outcome, not a KCIDB status
    with pytest.raises(jsonschema.ValidationError):
        kcidb_io.schema.V5_3.validate(doc)


@pytest.mark.parametrize(("name", "path"), [
    ("suites/test_events.py::test_events_match_the_kernel_source[mprotect/rw-ro]",
     "mmu_notifier.events.events_match_the_kernel_source_mprotect_rw-ro"),
    ("/abs/suite/test_my.py::TestX::test_y", "mmu_notifier.my.y"),
    ("suites/test_x.py", "mmu_notifier.x.cell"),
])
def test_paths(name: str, path: str):
    assert kcidb.test_path(name) == path


def test_a_cell_of_a_fragment_names_it():
    cell = Cell("debian:6.12", "on", "default", "suites/test_events.py", fragment="debug/kasan")
    report = kcidb.CellReport(cell, Outcome.PASS, "", None, [], "", "", ".", None, [], None, [], {}, None)
    assert kcidb.config_name(report) == "tinyconfig+base+drivers+notifier_on+kasan"
