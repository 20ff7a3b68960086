"""End to end: build once, test elsewhere. The cached 6.12 build is packed (`harness kernel --pack`), imported
into an empty cache in another directory (`harness kernel --import`), and a suite runs there on it.

No compiler may run for the kernel in that cache: the build's stamp (written last by a build) comes through
byte for byte, its build.log does not grow, ccache in that cache is never called, and the imported tree has
no kernel C sources that a build could compile. A module is then built against the import with
`make -C <build> M=...`, as a cell's probe or a driver's own module would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import paths
from harness.kernel import artifact, source
from harness.kernel.build import STAMP, KernelBuild, ccache_env, event_names_header
from harness.kernel.guest_modules import build_guest_modules, build_probe_module
from harness.observe import ktap

pytestmark = pytest.mark.e2e


def ccache_counts() -> dict[str, int]:
    """Compilations the cache's own ccache answered (hits) and ran (misses): in a fresh cache, everything."""
    out = subprocess.run(["ccache", "--print-stats"], env=ccache_env(), capture_output=True, text=True).stdout
    stats = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
    return {"hits": hits, "misses": int(stats.get("cache_miss", 0))}


def harness(*args: str, cache: Path | None = None, results: Path | None = None,
            timeout: float = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if cache:
        env["HARNESS_CACHE"] = str(cache)
        env.pop("CCACHE_DIR", None)  # the fresh cache's own ccache: nothing may land in it
    if results:
        env["HARNESS_RESULTS"] = str(results)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"harness {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-3000:]}" \
                                 f"\n{proc.stderr[-3000:]}"
    return proc


def test_a_cell_runs_from_an_imported_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "kernel-6.12-on.tar.zst"
    packed = json.loads(harness("kernel", "--kernel-src", "debian:6.12", "--notifier", "on", "--pack", str(out)).stdout)
    size = packed["artifact"]["bytes"]
    print(f"\nartifact {out.name}: {size / 2**20:.1f} MiB, {packed['artifact']['files']} files, "
          f"{packed['artifact']['unpacked_bytes'] / 2**20:.1f} MiB unpacked")
    assert out.stat().st_size == size and 1 * 2**20 < size < 200 * 2**20
    original_stamp = (Path(packed["bzImage"]).parents[3] / STAMP).read_bytes()

    cache = tmp_path / "elsewhere" / "cache"
    cache.mkdir(parents=True)
    imported = json.loads(harness("kernel", "--import", str(out), cache=cache).stdout)
    assert imported["imported"]["key"] == Path(packed["bzImage"]).parents[3].name.rsplit("-", 1)[1]
    build_dir = Path(imported["bzImage"]).parents[3]
    assert build_dir.is_relative_to(cache) and build_dir.is_symlink()
    assert (build_dir / STAMP).read_bytes() == original_stamp, "the kernel was rebuilt, or its stamp rewritten"
    tree = cache / "src" / "linux-source-6.12"
    assert (tree / source.IMPORTED).exists()
    assert not (tree / "mm/mmap.c").exists() and not list(tree.glob("kernel/*.c")), "no kernel C file is shipped"
    log_size = (build_dir / "build.log").stat().st_size

    results = tmp_path / "results"
    ran = harness("run", "--kernel-src", "debian:6.12", "--notifier", "on", "--ktap",
                  "suites/test_notifier_events.py", cache=cache, results=results)
    (run,) = [p for p in results.iterdir() if not p.is_symlink()]
    outcomes = json.loads((run / "outcomes.json").read_text())
    assert outcomes and {o["outcome"] for o in outcomes} == {"PASS"}, outcomes
    # --ktap: stdout is the KTAP document alone (pytest and the summary went to stderr)
    tap = ktap.parse(ran.stdout)
    assert ran.stdout.startswith("KTAP version 1\n") and tap.complete and tap.plan == len(outcomes)
    assert {r.status for r in tap.results} == {"pass"}
    assert json.loads((run / "kernel.json").read_text())["build_dir"] == str(build_dir)

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.delenv("CCACHE_DIR", raising=False)
    assert (build_dir / STAMP).read_bytes() == original_stamp
    assert (build_dir / "build.log").stat().st_size == log_size, "make ran on the kernel in the imported cache"
    assert ccache_counts() == {"hits": 0, "misses": 0}, "something was compiled in the imported cache"

    # Out-of-tree modules still build against it (a probe with one more line in its generated header: a new key)
    tree_obj = source.resolve("debian:6.12")
    assert tree_obj.imported
    build = KernelBuild(tree_obj, build_dir, imported["imported"]["key"], imported["release"])
    header = event_names_header(tree_obj.path) + "/* tests/test_kernel_artifact_e2e.py */\n"
    started = time.time()
    (ko,) = build_guest_modules(build, "probe", {"mmu_probe_events.h": header})
    assert ko.stat().st_size > 0 and ko.parent.parent == build_dir / "harness-guest-modules"
    # compiled here: an imported tree is untrusted, so its M= build runs in the sandbox (harness/kernel/sandbox.py),
    # whose ccache is read-only and counts nothing in this cache; its objects are new
    objects = list(ko.parent.glob("*.o"))
    assert objects and all(o.stat().st_mtime >= started - 1 for o in [ko, *objects]), "the module was not compiled here"
    assert (build_dir / STAMP).read_bytes() == original_stamp
    assert build_probe_module(build).exists()  # the shipped probe: still found, not rebuilt
    assert artifact.MANIFEST not in os.listdir(cache)
