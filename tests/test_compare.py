"""`harness compare`'s pure parts: reading a series, making a patched tree, and judging two runs.

The runs here are written by hand in the layout the plugin writes (harness/results/rundir.py), to pin
down the verdict rules; tests/test_compare_e2e.py builds real kernels and runs real suites.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from harness.checks import expectations
from harness.kernel import patches
from harness.kernel.source import user_tree
from harness.results import compare
from harness.results.model import Result, write_results
from harness.results.outcome import Outcome

PATCHES = Path(__file__).parent / "data" / "patches"
MAKEFILE = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n"


# --- series -------------------------------------------------------------------------------------

def test_a_format_patch_file_is_one_patch_with_its_subject():
    (p,) = patches.split_mbox((PATCHES / "mprotect-clear.patch").read_text(), "mprotect-clear.patch")
    assert p.subject == "mm/mprotect: report protection changes as MMU_NOTIFY_CLEAR"
    assert p.touched() == ["mm/mprotect.c"]


def test_an_mbox_is_split_in_order():
    names = ["comment-only.patch", "mprotect-clear.patch", "migrate-skip-notifier.patch"]
    mbox = "".join((PATCHES / n).read_text() for n in names)
    series = patches.split_mbox(mbox, "series.mbox")
    assert [p.origin for p in series] == ["series.mbox#1", "series.mbox#2", "series.mbox#3"]
    assert [p.touched() for p in series] == [["mm/mprotect.c"], ["mm/mprotect.c"], ["mm/rmap.c"]]
    assert series[2].subject.startswith("mm/rmap: skip the notifier in try_to_migrate_one() for folios at odd")


def test_a_file_without_a_diff_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("Subject: hello\n\nno diff here\n")
    with pytest.raises(patches.PatchError, match=r"notes\.txt: has no diff"):
        patches.read_series([str(tmp_path / "notes.txt")], user_tree(_tree(tmp_path / "t")))


def test_a_missing_patch_is_named(tmp_path: Path):
    with pytest.raises(patches.PatchError, match=r"no-such\.patch: no such file"):
        patches.read_series([str(tmp_path / "no-such.patch")], user_tree(_tree(tmp_path / "t")))


# --- patched trees ------------------------------------------------------------------------------

def _tree(path: Path) -> Path:
    (path / "mm").mkdir(parents=True)
    (path / "Makefile").write_text(MAKEFILE)
    (path / "Kconfig").write_text("")
    (path / "arch" / "x86").mkdir(parents=True)
    (path / "arch" / "x86" / "Kconfig").write_text("")
    (path / "mm" / "a.c").write_text("".join(f"int a{i};\n" for i in range(20)))
    (path / "mm" / "b.c").write_text("int b;\n")
    return path


def _patch(tree: Path, edit: str, tmp: Path) -> Path:
    """A git-style patch of mm/a.c: line 10 replaced by `edit`."""
    new = tmp / "new"
    (new / "mm").mkdir(parents=True, exist_ok=True)
    lines = (tree / "mm" / "a.c").read_text().splitlines(keepends=True)
    lines[9] = edit + "\n"
    (new / "mm" / "a.c").write_text("".join(lines))
    diff = subprocess.run(["git", "diff", "--no-index", "--", str(tree / "mm" / "a.c"), str(new / "mm" / "a.c")],
                          capture_output=True, text=True).stdout
    diff = diff.replace(str(tree / "mm" / "a.c"), "/mm/a.c").replace(str(new / "mm" / "a.c"), "/mm/a.c")
    out = tmp / "0001-edit.patch"
    out.write_text(f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
                   f"Subject: [PATCH] mm: edit a\n\n---\n{diff}")
    return out


def test_patched_tree_leaves_the_base_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    base_path = _tree(tmp_path / "base")
    base = user_tree(base_path)
    patch = _patch(base_path, "int a9_patched;", tmp_path)
    before = (base_path / "mm" / "a.c").read_text()

    ksrc, tree = patches.patched_tree(base, str(base_path), patches.read_series([str(patch)], base))

    assert ksrc.startswith("patched:") and tree.immutable and tree.base and tree.base.path == base_path
    assert "int a9_patched;" in (tree.path / "mm" / "a.c").read_text()
    assert (base_path / "mm" / "a.c").read_text() == before
    # the unchanged file is shared (a hard link), the patched one is the copy's own
    assert (tree.path / "mm" / "b.c").stat().st_ino == (base_path / "mm" / "b.c").stat().st_ino
    assert (tree.path / "mm" / "a.c").stat().st_ino != (base_path / "mm" / "a.c").stat().st_ino
    (applied,) = patches.describe(tree)
    assert (applied["origin"], applied["subject"]) == ("0001-edit.patch", "mm: edit a")
    assert applied["sha256"] == hashlib.sha256(patch.read_bytes()).hexdigest()
    assert patches.cached_tree(ksrc) == tree


def test_a_patch_that_does_not_apply_names_patch_and_hunk_and_leaves_nothing(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    base_path = _tree(tmp_path / "base")
    good = _patch(base_path, "int a9_first;", tmp_path / "one")
    clash = _patch(base_path, "int a9_second;", tmp_path / "two")  # the same line, already changed by `good`
    base = user_tree(base_path)

    with pytest.raises(patches.PatchError) as e:
        patches.patched_tree(base, str(base_path), patches.read_series([str(good), str(clash)], base))

    assert "patch 2/2 (0001-edit.patch: mm: edit a) does not apply" in str(e.value)
    assert "patch failed: mm/a.c:7" in str(e.value)  # git apply's words: the file and the hunk's line
    patched = tmp_path / "cache" / "src" / "patched"
    assert not patched.exists() or not any(patched.iterdir()), list(patched.iterdir())
    assert "int a9_first;" not in (base_path / "mm" / "a.c").read_text()


# --- the verdict --------------------------------------------------------------------------------

T = "suites/test_events.py::test_events_match_the_kernel_source[mprotect/rw-ro]"
MIGRATION = "suites/test_migration.py::test_migration_invalidates_every_page_it_moves[move_pages]"
TARGET = (0x7000_0000_0000, 0x7000_0000_8000)


def _run(root: Path, event: str = "PROTECTION_VMA", outcome: str = "PASS", checks: dict | None = None,
         migration: str = "PASS", console: str = "", extra_clear: int = 0) -> Path:
    tests = root / "tests"
    d = tests / "suites_test_events.py_test_events_match_the_kernel_source_mprotect_rw-ro"
    d.mkdir(parents=True)
    s, e = TARGET
    records = [{"seq": 0, "pid": 9, "cpid": 9, "kind": "start", "event": event, "start": s, "end": e, "flags": 1,
                "sub": "mn"},
               {"seq": 1, "pid": 9, "cpid": 9, "kind": "end", "event": event, "start": s, "end": e, "flags": 1,
                "sub": "mn"}]
    records += [{"seq": 2 + i, "pid": 9, "cpid": 9, "kind": "start", "event": "CLEAR", "start": 0x1000 * (i + 1),
                 "end": 0x1000 * (i + 2), "flags": 1, "sub": "mn"} for i in range(extra_clear)]
    (d / "events.json").write_text(json.dumps(records))
    (d / "program.json").write_text(json.dumps({"workload": "mprotect", "case": "rw-ro", "page_size": 4096,
                                                "ranges": {"target": list(TARGET)}}))
    (d / compare.CHECKS_JSON).write_text(json.dumps(checks or {"expectations": [], "contract": [], "extra": []}))
    write_results(root / "outcomes.json", [
        Result(T, Outcome(outcome), "" if outcome == "PASS" else "expected 1 x PROTECTION_VMA ..."),
        Result(MIGRATION, Outcome(migration), "" if migration == "PASS" else
               "page 0x7f0000001000 moved from pfn 0x1234 to 0x5678 with no invalidation covering it")])
    (root / "vm-1").mkdir()
    (root / "vm-1" / "console.log").write_text(console)
    return root


def _compare(tmp: Path, expected: list[compare.ExpectedChange] | None = None, **patched) -> compare.Comparison:
    return compare.compare("base", "patched", [_run(tmp / "b")], [_run(tmp / "p", **patched)],
                           expectations.load("6.12"), expected)


def test_identical_runs_change_nothing(tmp_path: Path):
    c = _compare(tmp_path)
    assert (c.exit_code(), c.outcomes, c.events, c.new_splats, c.workloads) == (0, [], [], [], 1)
    assert "Verdict: nothing changed (exit 0)" in compare.render_text(c)


def test_an_event_change_alone_is_exit_3_with_both_events_and_the_site(tmp_path: Path):
    c = _compare(tmp_path, event="CLEAR", outcome="FAIL",
                 checks={"expectations": ["expected 1 x PROTECTION_VMA"], "contract": [], "extra": []})
    assert c.exit_code() == compare.EXIT_EVENTS
    (change,) = c.events
    assert change.line() == ("mprotect/rw-ro: PROTECTION_VMA x1 → CLEAR x1 on 'target' (equal) "
                             "(mm/mprotect.c:change_pud_range)")
    assert [x.kind for x in c.outcomes] == ["events"]


def test_a_failure_beyond_the_expectations_is_a_regression(tmp_path: Path):
    c = _compare(tmp_path, event="CLEAR", outcome="FAIL",
                 checks={"expectations": ["x"], "contract": ["invalidate_range_start without its end"], "extra": []})
    assert c.exit_code() == compare.EXIT_REGRESSED and [x.kind for x in c.outcomes] == ["regressed"]


def test_a_completeness_failure_is_a_regression_naming_the_page(tmp_path: Path):
    c = _compare(tmp_path, migration="FAIL")
    assert c.exit_code() == compare.EXIT_REGRESSED
    assert c.completeness["patched"] and "page 0x7f0000001000 moved" in c.completeness["patched"][0]
    assert "patched 0/1 pass" in compare.render_text(c)


def test_a_new_splat_is_a_regression(tmp_path: Path):
    oops = ("[   12.0] ------------[ cut here ]------------\n"
            "[   12.0] WARNING: CPU: 0 PID: 1 at mm/rmap.c:123 try_to_migrate_one+0x1/0x2\n"
            "[   12.0] ---[ end trace 0000000000000000 ]---\n")
    c = _compare(tmp_path, console=oops)
    assert c.exit_code() == compare.EXIT_REGRESSED and c.new_splats and "try_to_migrate_one" in c.new_splats[0]


def test_events_outside_the_ranges_compare_as_sets(tmp_path: Path):
    b = _run(tmp_path / "b", extra_clear=1)
    cases = expectations.load("6.12")
    assert compare.compare("b", "p", [b], [_run(tmp_path / "p", extra_clear=3)], cases).exit_code() == 0
    c = compare.compare("b", "p", [b], [_run(tmp_path / "p0")], cases)
    assert [e.line() for e in c.events] == ["mprotect/rw-ro: CLEAR → nothing on outside the program's ranges "
                                            "[as sets: not deterministic]"]


def test_expect_events_allows_the_intended_change_and_flags_the_rest(tmp_path: Path):
    intended = [compare.ExpectedChange("mprotect/*", "PROTECTION_VMA", "CLEAR")]
    checks = {"expectations": ["x"], "contract": [], "extra": []}
    c = _compare(tmp_path / "1", intended, event="CLEAR", outcome="FAIL", checks=checks)
    assert c.exit_code() == compare.EXIT_EVENTS and c.events[0].intended
    other = [compare.ExpectedChange("mprotect/*", "PROTECTION_VMA", "UNMAP")]
    c = _compare(tmp_path / "2", other, event="CLEAR", outcome="FAIL", checks=checks)
    assert c.exit_code() == compare.EXIT_REGRESSED and "[NOT INTENDED]" in compare.render_text(c)
    c = _compare(tmp_path / "3", intended)  # nothing changed, but the series meant to
    assert c.exit_code() == compare.EXIT_REGRESSED and c.unseen == intended


def test_expect_events_file_errors_are_clear(tmp_path: Path):
    f = tmp_path / "expect.yaml"
    f.write_text("changes:\n  - {case: 'mprotect/*', to: CLEAR}\n")
    assert compare.load_expected(f) == [compare.ExpectedChange("mprotect/*", None, "CLEAR")]
    f.write_text("changes:\n  - {case: 'mprotect/*'}\n")
    with pytest.raises(compare.ExpectEventsError, match=r"expect\.yaml:2: changes\[0\]: give `from` and/or `to`"):
        compare.load_expected(f)
    f.write_text("changes:\n  - {to: CLEAR}\n")
    with pytest.raises(compare.ExpectEventsError, match=r"expect\.yaml:2: changes\[0\]\.case: must be given"):
        compare.load_expected(f)
    f.write_text("changes: [\n")
    with pytest.raises(compare.ExpectEventsError, match=r"expect\.yaml"):
        compare.load_expected(f)


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_git_base_is_its_head_and_a_range_is_its_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    repo = _tree(tmp_path / "repo")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    (repo / "mm" / "b.c").write_text("int b2;\n")
    _git(repo, "commit", "-qam", "mm: b2")
    (repo / "mm" / "b.c").write_text("int b3;\n")  # uncommitted: not part of the snapshot
    head = _git(repo, "rev-parse", "HEAD")

    ksrc, snap = patches.fixed_base(str(repo))

    assert ksrc.startswith("patched:") and snap.identity == f"git:{head}" and snap.immutable
    assert (snap.path / "mm" / "b.c").read_text() == "int b2;\n"
    series = patches.read_series(["HEAD~1..HEAD"], user_tree(repo))
    assert [p.subject for p in series] == ["mm: b2"] and series[0].touched() == ["mm/b.c"]
    with pytest.raises(patches.PatchError, match=r"git format-patch HEAD~5\.\.HEAD"):
        patches.read_series(["HEAD~5..HEAD"], user_tree(repo))


def test_device_counters_are_compared_with_the_access_time_ratio(tmp_path: Path):
    runs = []
    for side, faults, times in (("b", 20, [0.010, 0.011, 0.012, 0.013, 0.014]), ("p", 0, [0.005] * 5)):
        root = _run(tmp_path / side)
        d = root / "tests" / "suites_test_rxe.py_test_evidence_reader_writeback-ro"
        d.mkdir()
        compare.write_device_counters(d, "rxe", "writeback ro", {"invalidations": 40, "device_faults": faults,
                                                                 "stale": 0}, times)
        runs.append(root)
    c = compare.compare("b", "p", [runs[0]], [runs[1]], expectations.load("6.12"))
    (dev,) = c.devices
    assert dev.changed and c.exit_code() == compare.EXIT_EVENTS
    assert dev.line() == ("rxe writeback ro: device_faults 20 → 0, invalidations 40, stale 0, "
                          "access time x0.42 (0.48 to 0.37)")  # 0.005 over 0.012, 0.0105, 0.0135
