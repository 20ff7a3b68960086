"""harness/evidence.py without a guest: the probe's mirror line, the summary, the report files."""

from __future__ import annotations

import json

import pytest

from harness import evidence

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
            "access_median_cycles": cycles, "page_size": 4096, "frames_changed": 0, "counters": c}


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
    assert "| writeback-ro | ro 64 | 640 | 640 / 0 | 10 / 0 | 640 / 0 | 11 / 1 | 0 / 0 | 4.00x (4.00-4.00) |" in md
    assert json.loads((tmp_path / "evidence.json").read_text())["summary"] == rows
    assert (tmp_path / "invalidations.png").stat().st_size > 0 and (tmp_path / "access_time.png").exists()


@pytest.mark.parametrize("name", sorted(evidence.BY_NAME))
def test_workload_argv(name):
    argv = evidence.BY_NAME[name].argv("context", pages=8, iters=2)
    assert argv[:2] == ["/guest/bin/ev_mirror", evidence.BY_NAME[name].case] and "--pages=8" in argv
    assert ("--dir=/mnt/wb" in argv) == name.startswith("writeback")
