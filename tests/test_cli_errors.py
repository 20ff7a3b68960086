"""Bad input to the CLI: one paragraph on stderr, exit status 2, and nothing half-written in the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from tests.trees import kernel_tree as tree_or_skip


def harness(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HARNESS_CACHE": str(cache)})


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("harness: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def assert_no_build(cache: Path) -> None:
    builds = cache / "builds"
    leftovers = [p.name for p in builds.iterdir() if p.is_dir() and p.name != "by-spec"] if builds.exists() else []
    assert not leftovers, f"build directories left behind: {leftovers}"


def test_missing_tree(tmp_path: Path):
    proc = harness("kernel", f"--kernel-src={tmp_path / 'nope'}", cache=tmp_path / "cache")
    assert_clean_error(proc, "does not exist")
    assert_no_build(tmp_path / "cache")


def test_directory_that_is_not_a_kernel_tree(tmp_path: Path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/Makefile").write_text("all:\n")
    proc = harness("kernel", f"--kernel-src={tmp_path / 'tree'}", cache=tmp_path / "cache")
    assert_clean_error(proc, "is not a Linux kernel source tree")
    assert_no_build(tmp_path / "cache")


def test_unknown_symbol(tmp_path: Path):
    tree = tree_or_skip("6.12")
    proc = harness("kernel", f"--kernel-src={tree}", "--set", "NOT_A_REAL_SYMBOL=y", cache=tmp_path / "cache")
    assert_clean_error(proc, "CONFIG_NOT_A_REAL_SYMBOL")
    assert_no_build(tmp_path / "cache")


def test_request_that_cannot_stick_names_the_dependency(tmp_path: Path):
    tree = tree_or_skip("6.12")
    # DEVICE_PRIVATE depends on ZONE_DEVICE: asking n for ZONE_DEVICE and y for DEVICE_PRIVATE cannot hold.
    proc = harness("kernel", f"--kernel-src={tree}", "--set", "ZONE_DEVICE=n", cache=tmp_path / "cache")
    assert_clean_error(proc, "did not stick", "CONFIG_DEVICE_PRIVATE", "ZONE_DEVICE[=n]")
    assert_no_build(tmp_path / "cache")


def test_malformed_fragment_line(tmp_path: Path):
    tree = tree_or_skip("6.12")
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_SMP=y\nthis is not a config line\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "config", "make", f"--kernel-src={tree}",
                           f"--fragment={frag}", "-o", str(tmp_path / "out.config")],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=300)
    assert_clean_error(proc, f"{frag}:2", "not a Kconfig fragment line")
    assert not (tmp_path / "out.config").exists()


@pytest.mark.parametrize("machine", ["no-such-machine"])
def test_unknown_machine(tmp_path: Path, machine: str):
    proc = harness("shell", f"--machine={machine}", cache=Path(paths.cache_root()))
    assert_clean_error(proc, f"unknown machine profile {machine!r}")


def test_tree_for_another_architecture(tmp_path: Path):
    tree = tmp_path / "tree"
    (tree / "arch/arm64").mkdir(parents=True)
    for name in ("Kconfig", "Makefile", "arch/arm64/Kconfig"):
        (tree / name).write_text("")
    proc = harness("kernel", f"--kernel-src={tree}", cache=tmp_path / "cache")
    assert_clean_error(proc, "has no arch/x86 (it has: arm64)", "cannot be built for x86_64")
    assert_no_build(tmp_path / "cache")


def test_extra_fragment_that_does_not_exist(tmp_path: Path):
    tree = tree_or_skip("6.12")
    proc = harness("kernel", f"--kernel-src={tree}", "--fragment=debug/no-such", cache=tmp_path / "cache")
    assert_clean_error(proc, "cannot read config file debug/no-such")
    assert_no_build(tmp_path / "cache")


@pytest.mark.parametrize(("profile", "needle"), [
    ("arch: aarch64\n", "asks for arch 'aarch64'; the harness builds and boots arm64, x86_64 guests"),
    ("arch: arm64\n", "is an arm64 machine, not an x86_64 one"),
    ("devices: [no-such-gpu]\n", "needs the QEMU device 'no-such-gpu', which QEMU emulator version"),
])
def test_run_refuses_a_machine_it_cannot_boot_before_building(tmp_path: Path, profile: str, needle: str):
    (tmp_path / "machine.yaml").write_text(profile)
    # An empty cache: had the run gone on to build, this would take ten minutes, not a second.
    proc = harness("run", f"--machine={tmp_path / 'machine.yaml'}", f"--results-dir={tmp_path / 'run'}",
                   cache=tmp_path / "cache")
    assert_clean_error(proc, needle)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
