"""Soft-RoCE helpers without a guest: kprobe call traces and markers, ODP counters, the ODP skip reasons, the
image's host files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.checks import rdma
from harness.kernel import image
from harness.kernel.arch import load_arch
from harness.kernel.build import BuildError, ToolMissing
from harness.observe import kprobe

NAMES = ["MMU_NOTIFY_UNMAP", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_PROTECTION_VMA", "MMU_NOTIFY_PROTECTION_PAGE",
         "MMU_NOTIFY_SOFT_DIRTY", "MMU_NOTIFY_RELEASE", "MMU_NOTIFY_MIGRATE", "MMU_NOTIFY_EXCLUSIVE"]

# The shapes tracefs prints for a kprobe on a module function, a kretprobe, and a trace_marker write:
TRACE = (Path(__file__).parent / "data/rxe_calls_trace.txt").read_text()
EVENTS = {"rxe_invalidate", "odp_unmap", "odp_map", "odp_map_ret"}


def test_call_probe_lines():
    probe, ret = kprobe.CallProbe("f", "sym", ("a=$arg1:u8",)), kprobe.CallProbe("g", "sym", ("r=$retval:s32",), True)
    assert probe.line() == "p:harness_calls/f sym a=$arg1:u8"
    assert ret.line() == "r:harness_calls/g sym r=$retval:s32"


def test_parse_calls_reads_kprobes_kretprobes_and_markers():
    calls = kprobe.parse_calls(TRACE, EVENTS)
    assert [c.event for c in calls] == ["odp_map", "odp_map_ret", kprobe.MARKER, "rxe_invalidate", "odp_unmap",
                                        "rxe_invalidate", "odp_map", "odp_map_ret", kprobe.MARKER, "rxe_invalidate"]
    assert calls[0].fields == {"va": 0x7f0000000000, "bcnt": 262144, "fault": 0}
    assert calls[7].fields == {"ret": -14}
    assert calls[2].text == "rxe_odp: op" and calls[5].comm == "kworker/1:2" and calls[5].pid == 40
    assert kprobe.parse_calls(TRACE, {"odp_map"})[0].event == "odp_map"  # others left out, markers kept
    assert len(kprobe.parse_calls(TRACE, {"odp_map"})) == 4


def test_between_markers():
    calls = kprobe.parse_calls(TRACE, EVENTS)
    phase = kprobe.between(calls, "rxe_odp: op", "rxe_odp: done")
    assert [c.event for c in phase] == ["rxe_invalidate", "odp_unmap", "rxe_invalidate", "odp_map", "odp_map_ret"]
    assert len(kprobe.between(calls, "rxe_odp: op")) == 6  # to the end, the marker itself left out
    with pytest.raises(kprobe.KprobeError, match="no trace marker 'nope'"):
        kprobe.between(calls, "nope")


def test_odp_counts():
    calls = kprobe.parse_calls(TRACE, EVENTS)
    whole = rdma.OdpCounts.from_calls([c for c in calls if c.event != kprobe.MARKER], NAMES)
    assert whole.as_dict() == {"invalidations": 3, "acted": 1, "events": {"CLEAR": 1, "PROTECTION_VMA": 1,
                                                                          "RELEASE": 1},
                               "faults": 1, "snapshots": 1, "fault_errors": 1}
    phase = rdma.OdpCounts.from_calls(kprobe.between(calls, "rxe_odp: op", "rxe_odp: done"), NAMES)
    assert (phase.invalidations, phase.faults, phase.snapshots, phase.events["RELEASE"]) == (2, 1, 0, 0)


def test_gid_of_ipv4():
    assert rdma.gid_of_ipv4("10.0.2.15") == "0000:0000:0000:0000:0000:ffff:0a00:020f"


@dataclass
class FakeBuild:
    symbols: tuple[str, ...]

    def has(self, symbol: str) -> bool:
        return symbol in self.symbols


@dataclass
class FakeTree:
    path: Path
    version: str = "6.12.117"


def test_odp_skip_reasons(tmp_path: Path):
    on, tree = FakeBuild(("INFINIBAND_ON_DEMAND_PAGING",)), FakeTree(tmp_path)
    no_odp = {"odp": False, "odp_general_caps": 0}
    assert rdma.odp_unavailable(on, tree, {"odp": True}) is None  # type: ignore[arg-type]
    off = rdma.odp_unavailable(FakeBuild(()), tree, no_odp)  # type: ignore[arg-type]
    assert off and "CONFIG_INFINIBAND_ON_DEMAND_PAGING is not set" in off
    old = rdma.odp_unavailable(on, tree, no_odp)  # type: ignore[arg-type]
    assert old and "since Linux 6.15" in old and rdma.ODP_SOURCE in old and "6.12.117 tree lacks" in old
    (tmp_path / rdma.ODP_SOURCE).parent.mkdir(parents=True)
    (tmp_path / rdma.ODP_SOURCE).write_text("")
    with pytest.raises(rdma.RxeError, match="yet rxe0 reports no ODP"):  # it should have ODP: a failure
        rdma.odp_unavailable(on, tree, no_odp)  # type: ignore[arg-type]


def test_userspace_files_bring_their_libraries(tmp_path: Path):
    config = tmp_path / "u.yaml"
    config.write_text("files:\n  - {path: '/bin/tru[e]', package: coreutils}\n")
    files = [f for f, guest in image.userspace_files(load_arch(), config=config) if str(f) == guest]
    assert Path("/bin/true") in files
    assert any(f.name.startswith("libc.so") for f in files), files  # from ldd
    assert any(f.name.startswith("ld-linux") for f in files), files  # the loader


def test_userspace_files_of_another_architecture_come_from_its_packages(tmp_path: Path):
    config = tmp_path / "u.yaml"
    config.write_text("files:\n  - {path: '/usr/lib/{triplet}/libibverbs/librxe-*.so', package: ibverbs-providers}\n")
    root = tmp_path / "root"
    (root / "usr/lib/aarch64-linux-gnu/libibverbs").mkdir(parents=True)
    (root / "usr/lib/aarch64-linux-gnu/libibverbs/librxe-rdmav34.so").write_text("")
    assert image.userspace_files(load_arch("arm64"), root, config) == [
        (root / "usr/lib/aarch64-linux-gnu/libibverbs/librxe-rdmav34.so",
         "/usr/lib/aarch64-linux-gnu/libibverbs/librxe-rdmav34.so")]
    (root / "usr/lib/aarch64-linux-gnu/libibverbs/librxe-rdmav34.so").unlink()
    with pytest.raises(BuildError, match=r"add ibverbs-providers to configs/arches/arm64\.yaml's userland"):
        image.userspace_files(load_arch("arm64"), root, config)


def test_userspace_files_name_the_missing_package(tmp_path: Path):
    config = tmp_path / "u.yaml"
    config.write_text("files:\n  - {path: /nonexistent/librxe-rdmav*.so, package: ibverbs-providers}\n")
    with pytest.raises(ToolMissing, match="apt-get install ibverbs-providers"):
        image.userspace_files(load_arch(), config=config)
    config.write_text("files: [/bin/true]\n")
    with pytest.raises(BuildError, match=r"u\.yaml:1: files\[0\]: expected a file \{path, package\?\}"):
        image.userspace_files(load_arch(), config=config)


@pytest.mark.parametrize("series,buggy", [("7.2", True), ("7.3", True), ("6.12", False)])
def test_odp_copy_bug_is_tied_to_the_trees_code(series, buggy):
    from harness import paths
    from harness.checks import drivers

    tree = paths.cache_root() / f"src/linux-source-{series}"
    if not (tree / "Makefile").exists():
        pytest.skip(f"{tree} is not unpacked in this cache")
    assert bool(drivers.load_driver("rxe").known_failure("odp-copy", series, tree=tree)) is buggy
