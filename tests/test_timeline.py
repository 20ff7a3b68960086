"""The boot timeline: markers parsed from console lines, stages kept in order, the last one reached named."""

from __future__ import annotations

import subprocess

from harness.kernel.image import newc
from harness.results.model import Boot, Timings
from harness.vm.timeline import STAGES, Arrival, Timeline, parse_marker

T0 = 1000.0  # a QEMU start, in time.monotonic() seconds


def line(at: float, text: str, cpu_s: float | None = None) -> Arrival:
    return Arrival(T0 + at, cpu_s, text)


KERNEL_LINE = line(0.4, "[    0.000000] Linux version 6.12.117", 0.3)


def whole_boot() -> Timeline:
    timeline = Timeline.from_console(T0, KERNEL_LINE, [
        line(1.5, "HARNESS-STAGE init 1.02", 1.9),
        line(1.7, "HARNESS-STAGE modules 1.20", 2.1),
        line(1.8, "HARNESS-STAGE net 1.31", 2.2),
        line(1.9, "HARNESS-STAGE sshd 1.40"),  # QEMU's CPU time unknown (its /proc entry unreadable)
        line(1.95, "HARNESS-READY 6.12.117", 2.4),
    ])
    timeline.mark("ssh", 2.2, 2.6)
    timeline.mark("command", 2.25, 2.7, guest_uptime=1.71)
    return timeline


def test_markers_parse_with_and_without_the_guest_uptime():
    assert parse_marker("HARNESS-STAGE init 0.93") == ("init", 0.93)
    assert parse_marker("HARNESS-STAGE sshd 4.49\r") == ("sshd", 4.49)
    assert parse_marker("HARNESS-STAGE net") == ("net", None)


def test_other_lines_are_not_markers():
    assert parse_marker("HARNESS-READY 6.12.117") is None
    assert parse_marker("HARNESS-STAGE bogus 1.0") is None  # not a stage the guest announces
    assert parse_marker("HARNESS-STAGE ssh 1.0") is None  # the host's stage: a guest cannot claim it
    assert parse_marker("[    1.2] HARNESS-STAGE init 1.0") is None  # not at the line's start
    assert parse_marker("HARNESS-STAGE init 1.0 and more") is None


def test_times_are_relative_to_qemu_start_with_the_guest_uptime_beside():
    timeline = whole_boot()
    assert timeline.at == {"qemu": 0.0, "kernel": 0.4, "init": 1.5, "modules": 1.7, "net": 1.8, "sshd": 1.9,
                           "ssh": 2.2, "command": 2.25}
    assert timeline.guest_uptime == {"init": 1.02, "modules": 1.2, "net": 1.31, "sshd": 1.4, "command": 1.71}
    assert timeline.cpu == {"kernel": 0.3, "init": 1.9, "modules": 2.1, "net": 2.2, "ssh": 2.6, "command": 2.7}
    assert timeline.problems() == []


def test_a_stage_announced_twice_keeps_its_first_arrival():
    timeline = Timeline.from_console(T0, KERNEL_LINE, [line(1.5, "HARNESS-STAGE init 1.0"),
                                                      line(9.0, "HARNESS-STAGE init 0.9")])
    assert timeline.at["init"] == 1.5
    assert timeline.guest_uptime["init"] == 1.0


def test_problems_name_missing_stages_and_stages_out_of_order():
    timeline = whole_boot()
    del timeline.at["net"]
    timeline.at["ssh"] = 1.85  # before sshd listened: impossible in a real boot
    problems = timeline.problems()
    assert "stage net missing" in problems
    assert "ssh at 1.85 s precedes sshd at 1.9 s" in problems
    assert len(problems) == 2


def test_last_stage_is_the_furthest_reached_in_stage_order():
    assert Timeline({"qemu": 0.0}).last_stage() == "qemu"
    assert Timeline().last_stage() == "qemu"
    hung = Timeline.from_console(T0, KERNEL_LINE, [line(1.2, "HARNESS-STAGE init 0.8")])
    assert hung.last_stage() == "init"
    assert hung.describe_last() == "last stage reached: init (at 1.20 s)"
    no_kernel_line = Timeline.from_console(T0, None, [])
    assert no_kernel_line.describe_last() == "last stage reached: qemu (at 0.00 s)"
    assert whole_boot().last_stage() == "command"


def test_json_round_trip_in_stage_order():
    timeline = whole_boot()
    data = timeline.to_json()
    assert [k for k in data if k not in ("guest_uptime", "qemu_cpu_s")] == list(STAGES)
    assert Timeline.from_json(data) == timeline


def test_timings_json_keeps_each_boots_timeline(tmp_path):
    path = tmp_path / "timings.json"
    Timings(boots=[Boot(1, 2.2, "tcg", 60.0, timeline=whole_boot().to_json())]).write(path)
    (boot,) = Timings.read(path).boots
    assert Timeline.from_json(boot.timeline) == whole_boot()
    # a timings.json written before timelines existed still reads
    path.write_text('{"boots": [{"vm": 1, "boot_to_ssh_s": 2.5}]}')
    assert Timings.read(path).boots[0].timeline == {}


def test_the_bare_image_writer_makes_a_cpio_the_cpio_tool_reads(tmp_path):
    archive = newc([("dev", 0o040755, b""), ("dev/console", 0o020600, b""), ("init", 0o100755, b"#!x\n12345")])
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True, check=True).stdout
    lines = listing.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["dev", "dev/console", "init"]
    assert lines[1].startswith("crw-------") and "5," in lines[1] and " 1 " in lines[1], lines[1]
    assert lines[2].startswith("-rwxr-xr-x") and " 9 " in lines[2], lines[2]  # its 9 bytes
    extracted = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "init"], input=archive, capture_output=True,
                               check=True, cwd=tmp_path).stdout
    assert extracted == b"#!x\n12345"
