"""`make deps` installs what the target needs, no more: the sets of configs/debian-packages.txt per target."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness import paths
from harness.matrix import export

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")


def packages_for(target: str, *variables: str) -> set[str]:
    """The packages `deps` checks for `make TARGET`, read from make's dry run (the recipe, expanded)."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target, *variables], cwd=paths.REPO,
                         capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"for p in ([^;]*); do dpkg-query", out)
    assert m, out
    return set(m[1].split())


def test_make_run_installs_the_default_tree_and_no_other():
    run = packages_for("run")
    assert {"qemu-system-x86", "busybox-static", "gcc", "linux-source-6.12", "libnuma-dev", "perftest"} <= run
    assert not run & {"linux-source-6.1", "linux-config-6.12", "linux-config-6.1", "git", "zstd"}


def test_a_tree_of_ones_own_needs_no_debian_tree():
    assert "linux-source-6.12" not in packages_for("run", "KSRC=/src/linux")


def test_make_test_and_make_deps_install_every_package_listed():
    everything = set(export.debian_packages())
    assert {"linux-source-6.1", "linux-config-6.12", "git", "zstd", "linux-source-6.12"} <= everything
    assert packages_for("test") == everything
    assert packages_for("deps") == everything


def test_compare_and_bench_get_git():
    assert "git" in packages_for("compare") and "git" in packages_for("bench")
    assert "linux-config-6.1" not in packages_for("bench")
