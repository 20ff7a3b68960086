"""harness/observe/debugfs.py parsers, on debugfs and tracefs text captured from 6.12 guests (tests/data/debugfs/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.observe import debugfs

DATA = Path(__file__).parent / "data" / "debugfs"


def test_gem_names_table():
    rows = debugfs.parse_table((DATA / "gem_names.mapped").read_text())
    assert rows[0] == {"name": "1", "size": "16384", "handles": "1", "refcount": "2"}
    assert [r["name"] for r in rows] == ["1", "2", "3", "4"]


def test_table_with_only_a_header_and_a_command_with_spaces():
    header = (DATA / "clients.empty").read_text()
    assert debugfs.parse_table(header) == []
    rows = debugfs.parse_table(header + "    my prog   64   0   y    y     0          0\n")
    assert rows == [{"command": "my prog", "tgid": "64", "dev": "0", "master": "y", "a": "y", "uid": "0",
                     "magic": "0"}]
    with pytest.raises(debugfs.DebugfsError):
        debugfs.parse_table(header + "  short 1\n")
    with pytest.raises(debugfs.DebugfsError):
        debugfs.parse_table("")


def test_fields():
    fields = debugfs.parse_fields((DATA / "virtio-gpu-features").read_text())
    assert fields["virgl"] == "no" and fields["resource uuid"] == "no" and fields["scanouts"] == "0"


def test_counters_dump_keeps_single_integers_only():
    dump = "pages_4k\t15 \nhalt_wait_hist\t0 0 0 0 \nexits\t16 \nname\tvirtio_gpu dev=0 \n"
    assert debugfs.parse_counters_dump(dump) == {"pages_4k": 15, "exits": 16}


def test_diff():
    assert debugfs.diff({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 1}) == {"b": 3, "c": -3, "d": 1}


def test_trace_events_of_kvm_unmap_hva_range():
    events = debugfs.trace_events((DATA / "kvm_unmap_hva_range.trace").read_text(), "kvm_unmap_hva_range")
    assert len(events) == 4
    first = events[0]
    assert (first.task, first.pid, first.event) == ("kvm_memslot", 141, "kvm_unmap_hva_range")
    assert first.text == "mmu notifier unmap range: 0x000000004c6000 -- 0x000000004c7000"
    assert debugfs.trace_events((DATA / "kvm_unmap_hva_range.trace").read_text(), "other") == []
