"""harness/checks/evidence.py without a guest: the probe's mirror line, the summary, the report files."""

from __future__ import annotations

import json

import pytest

from harness.checks import evidence

LINE = ("id=0 pid=71 start=0x7f0000000000 end=0x7f0000040000 perm=ro mode=context valid=1 tracked=1 received=640 "
        "acted=0 skipped=640 accesses=11 faults=1 refaults=0 tracking_frees=0 tracking_allocs=1 verifies=10 "
        "stale=0 events=PROTECTION_PAGE:640:640,")


def test_parse_mirror():
    c = evidence.parse_mirror(LINE)
    assert c["start"] == 0x7F0000000000 and c["perm"] == "ro" and c["mode"] == "context"
    assert (c["received"], c["skipped"], c["refaults"]) == (640, 640, 0)
    assert c["events"] == {"PROTECTION_PAGE": {"received": 640, "skipped": 640}}


def test_parse_mirror_no_events():
    assert evidence.parse_mirror(LINE.split(" events=")[0] + " events=")["events"] == {}


def _run(mode: str, rep: int, cycles: int, **over) -> dict:
    c = evidence.parse_mirror(LINE)
    if mode == "blind":
        c.update(acted=640, skipped=0, refaults=10, faults=11, tracking_allocs=11, tracking_frees=10,
                 events={"PROTECTION_PAGE": {"received": 640, "skipped": 0}})
    c.update(over)
    return {"workload": "writeback-ro", "mode": mode, "repeat": rep, "access_cycles": cycles * 10,
            "access_median_cycles": cycles, "page_size": 4096, "frames_changed": 0, "changed_iters": 0,
            "counters": c}


def _hmm(rep: int, faulted: int = 10, workload: str = "writeback-ro", **over) -> dict:
    """A test_hmm run as collect() records it."""
    return {"workload": workload, "mode": evidence.HMM, "repeat": rep, "faults": faulted,
            "faulted_accesses": faulted, "first_faults": 1, "warm_faults": 0, "frames_changed": 0,
            "changed_iters": 0, "mismatched": 0, "access_cycles": 30000, "access_median_cycles": 3000,
            "warm_access_median_cycles": 2000, "page_size": 4096, "pages": 64, "iters": 10,
            "mirror_pages": 64} | over


def test_summarise_compares_modes_per_repeat():
    runs = [_run("blind", 0, 4000), _run("context", 0, 1000), _run("blind", 1, 3000), _run("context", 1, 3000),
            _run("blind", 2, 2000), _run("context", 2, 1000, stale=2)]
    (row,) = evidence.summarise(runs)
    assert row["mirror_pages"] == 64
    assert (row["acted_blind"], row["acted_context"], row["skipped_context"]) == (640, 0, 640)
    assert (row["refaults_blind"], row["refaults_context"], row["refaults_avoided"]) == (10, 0, 10)
    assert (row["pages_refaulted_blind"], row["pages_refaulted_context"]) == (640, 0)
    assert row["ratio"] == {"min": 1.0, "median": 2.0, "max": 4.0}
    assert row["stale_context"] == 2 and row["varies"] == ["stale"]
    assert row["access_kcycles_blind"]["median"] == 3.0


def test_summarise_needs_both_modes():
    assert evidence.summarise([_run("blind", 0, 1)]) == []


def test_write_report(tmp_path):
    runs = [_run("blind", 0, 4000), _run("context", 0, 1000)]
    meta = {"date": "2026-11-24", "release": "6.12.117", "accel": "tcg", "repeats": 1}
    rows = evidence.write_report(tmp_path, runs, meta)
    md = (tmp_path / "evidence.md").read_text()
    assert ("| writeback-ro | ro 64 | 640 | 640 / 0 | 10 / 0 | n/a | 640 / 0 | 11 / 1 | 0 / 0 "
            "| 4.00x (4.00-4.00) |") in md
    assert json.loads((tmp_path / "evidence.json").read_text())["summary"] == rows
    assert (tmp_path / "invalidations.png").stat().st_size > 0 and (tmp_path / "access_time.png").exists()
    assert (tmp_path / "refaults.png").exists()


def test_summarise_test_hmm_matches_blind():
    runs = [_run("blind", 0, 4000), _run("context", 0, 1000), _hmm(0), _run("blind", 1, 4000),
            _run("context", 1, 1000), _hmm(1, warm_access_median_cycles=1000)]
    (row,) = evidence.summarise(runs)
    h = row["hmm"]
    assert (h["faulted_accesses"], h["faults"], h["repeats"], h["varies"]) == (10, 10, 2, [])
    assert h["matches_blind"] and h["faulted_when_moved"]
    assert h["refault_ratio"] == {"min": 1.5, "median": 2.25, "max": 3.0}
    md = evidence.markdown([row], {"date": "d", "release": "r", "accel": "tcg", "repeats": 2})
    assert "| 10 / 0 | 10 | 640 / 0 |" in md
    assert "equal to the model's blind re-faults in every repeat: 1 of 1 deterministic workloads (writeback-ro)" in md
    assert "**differs**" not in md


def test_summarise_test_hmm_difference_is_reported():
    runs = [_run("blind", 0, 4000), _run("context", 0, 1000), _hmm(0, faulted=7, faults=9, warm_faults=2)]
    (row,) = evidence.summarise(runs)
    assert not row["hmm"]["matches_blind"]
    md = evidence.markdown([row], {"date": "d", "release": "r", "accel": "tcg", "repeats": 1})
    assert "| 7 (9 rounds) |" in md
    assert ("**differs** in writeback-ro: test_hmm 7, model blind 10; test_hmm also faulted 2 times with no "
            "operation in between") in md


def test_summarise_test_hmm_kernel_chosen_pages_per_run():
    """compaction: runs differ, so faults are held against the iterations that moved a mirrored page."""
    runs = [_run("blind", 0, 4000, received=5), _run("context", 0, 1000), _hmm(0, faulted=2, changed_iters=2,
                                                                                frames_changed=40),
            _run("blind", 1, 4000, received=0, refaults=0), _run("context", 1, 1000),
            _hmm(1, faulted=1, changed_iters=2, frames_changed=30)]
    (row,) = evidence.summarise(runs)
    h = row["hmm"]
    assert row["varies"] and h["varies"] == ["faults", "faulted_accesses", "frames_changed"]
    assert not h["faulted_when_moved"]
    md = evidence.markdown([row], {"date": "d", "release": "r", "accel": "tcg", "repeats": 2})
    assert "0 of 0 deterministic workloads" in md
    assert "test_hmm 2 (40 pages in 2), 1 (30 pages in 2); model blind 10 (0 pages in 0), 0 (0 pages in 0)" in md
    assert "**test_hmm did not fault after an iteration that moved a mirrored page.**" in md


def test_markdown_says_why_test_hmm_did_not_run():
    runs = [_run("blind", 0, 4000), _run("context", 0, 1000)]
    rows = evidence.summarise(runs)
    md = evidence.markdown(rows, {"date": "d", "release": "r", "accel": "tcg", "repeats": 1,
                                  "hmm_skipped": "the kernel has no CONFIG_TEST_HMM"})
    assert "test_hmm (lib/test_hmm.c) did not run: the kernel has no CONFIG_TEST_HMM." in md


@pytest.mark.parametrize("name", sorted(evidence.BY_NAME))
def test_workload_argv(name):
    argv = evidence.BY_NAME[name].argv("context", pages=8, iters=2)
    assert argv[:2] == ["/guest/bin/ev_mirror", evidence.BY_NAME[name].case] and "--pages=8" in argv
    assert ("--dir=/mnt/wb" in argv) == name.startswith("writeback")
    hmm = evidence.BY_NAME[name].hmm_argv("/guest/bin/ev_hmm", pages=8, iters=2)
    assert hmm[:3] == ["/guest/bin/ev_hmm", evidence.BY_NAME[name].case, evidence.BY_NAME[name].perm]
    assert hmm[3:] == argv[4:], "the same workload options for both devices"
