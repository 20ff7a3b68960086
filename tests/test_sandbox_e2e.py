"""A real compare of Debian's 6.12 against a series whose mm/Makefile and mm/Kconfig try to write outside their
build (harness/kernel/sandbox.py): started as root, the patched kernel is configured, built on the base's build
and booted, and nothing of it lands outside its build and cache directories."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness import paths
from harness.kernel import patches, sandbox, source

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="what a root harness lets a series do needs root")]

# Where a host's writable places are: a sandboxed step must leave nothing of its own uid in any of them
HOST_PLACES = ("/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/work", "/etc", "/usr/local", "/opt")


def canary_patch(tree: Path, canary: Path, open_canary: Path, tag: str) -> str:
    """mm/Makefile and mm/Kconfig with a shell command each that writes outside the build (and, as proof that
    it ran and as whom, `id -u` into the directory it runs in: the build's, where that lands)."""
    tries = (f"echo pwned > {canary}; echo pwned > {open_canary}; echo pwned > /tmp/outside-{tag}; "
             f"echo pwned > {paths.cache_root().parent}/beside-{tag}; echo pwned > /root/outside-{tag}; "
             "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern")
    edits = {"mm/Makefile": lambda text: text + f"\n# {tag}\n$(shell {{ {tries}; }} 2>/dev/null; "
                                                 "id -u > harness-canary-make-uid)\n",
             "mm/Kconfig": lambda text: text.replace(
                 "\n", f"\nharness_canary := $(shell,{{ {tries}; }} 2>/dev/null; id -u > harness-canary-kconfig-uid)\n",
                 1)}
    diff = []
    for name, edit in edits.items():
        old = (tree / name).read_text()
        lines = difflib.unified_diff(old.splitlines(keepends=True), edit(old).splitlines(keepends=True),
                                     f"a/{name}", f"b/{name}")
        diff.append(f"diff --git a/{name} b/{name}\n" + "".join(lines))
    return f"Subject: [PATCH] mm: a canary that writes outside the build ({tag})\n\n---\n" + "".join(diff)


def owned_by_sandbox() -> list[str]:
    found = []
    for place in HOST_PLACES:
        proc = subprocess.run(["find", place, "-xdev", "(", "-uid", str(sandbox.UID), "-o", "-gid",
                               str(sandbox.GID), ")", "-print"], capture_output=True, text=True)
        found += proc.stdout.split()
    return sorted(set(found))


def test_a_series_that_writes_outside_its_build_is_confined_and_still_boots(tmp_path: Path):
    tag = uuid.uuid4().hex[:12]
    outside = Path("/var/tmp") / f"harness-sandbox-e2e-{tag}"
    (outside / "open").mkdir(parents=True)
    (outside / "open").chmod(0o777)
    canary, open_canary = outside / "canary", outside / "open" / "canary"
    for path, mode in ((canary, 0o644), (open_canary, 0o666)):
        path.write_text("canary\n")
        path.chmod(mode)
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    base = source.resolve("debian:6.12")
    patch = tmp_path / "canary.patch"
    patch.write_text(canary_patch(base.path, canary, open_canary, tag))
    tree = None
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--patch", str(patch),
                               f"--results-dir={tmp_path / 'results'}", "suites/test_events.py", "-k",
                               "test_events_match_the_kernel_source and mprotect"],
                              cwd=paths.REPO, capture_output=True, text=True, timeout=3600)
        _, tree = patches.patched_tree(base, "debian:6.12", patches.read_series([str(patch)], base))
        # the patched kernel was configured, built and booted, and the comment-like series changed nothing
        assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
        assert "Verdict: nothing changed (exit 0)" in proc.stdout
        report = json.loads((tmp_path / "results" / "compare.json").read_text())
        assert report["tests"]["base"] == report["tests"]["patched"] > 0
        figures = report["builds"]["patched"]
        assert figures["seeded_from_base"] and figures["ccache_hits"] > 0, figures  # the fast path kept
        # both canaries ran, as the sandbox's uid: make's in the build, conf's in the build's olddefconfig
        (build,) = tree.path.glob("harness-build-*")
        for name in ("harness-canary-make-uid", "harness-canary-kconfig-uid"):
            assert (build / name).read_text().strip() == str(sandbox.UID), name
        # and wrote nothing anywhere else
        for path in (Path(f"/tmp/outside-{tag}"), paths.cache_root().parent / f"beside-{tag}",
                     Path(f"/root/outside-{tag}")):
            assert not path.exists(), f"the series wrote {path}"
        assert canary.read_text() == open_canary.read_text() == "canary\n"
        assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
        assert owned_by_sandbox() == []  # every directory it was lent was taken back
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        for path in (Path(f"/tmp/outside-{tag}"), paths.cache_root().parent / f"beside-{tag}",
                     Path(f"/root/outside-{tag}")):
            path.unlink(missing_ok=True)
        if tree is not None:  # this run's own tree and build (a unique series): 230 MB the cache need not keep
            for link in (paths.cache_root() / "builds").glob(f"{tree.version}-*"):
                if link.is_symlink() and Path(os.readlink(link)).is_relative_to(tree.path):
                    link.unlink()
            shutil.rmtree(tree.path, ignore_errors=True)
