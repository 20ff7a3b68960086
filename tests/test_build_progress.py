"""The build's progress line and its estimate (harness/kernel/build.py: BuildProgress, expected_build), and
the no-op check that lets an unchanged user tree skip make (unchanged_since_build)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from harness.kernel import build
from harness.kernel.build import BuildProgress, Expected, config_sha, expected_build
from harness.kernel.source import KernelTree

KBUILD = ["  SYNC    include/config/auto.conf\n", "  HOSTCC  scripts/basic/fixdep\n",
          "mm/rmap.c:12:5: warning: unused variable 'x'\n", "   12 |  int x;\n",
          "  CC      mm/rmap.o\n", "  CC [M]  lib/test_hmm.o\n", "  LD      vmlinux.o\n",
          "  Kernel: arch/x86/boot/bzImage is ready  (#1)\n"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steps_are_kbuilds_quiet_lines_only():
    p = BuildProgress("kernel build", None, clock=Clock(), out=io.StringIO())
    p.start()
    for line in KBUILD:
        p.line(line)
    assert (p.steps, p.compiled) == (5, 2)  # SYNC HOSTCC CC CC[M] LD; not the warning, its source line, "Kernel:"


def test_the_estimate_is_the_expected_duration_then_the_rate_so_far():
    clock, out = Clock(), io.StringIO()
    p = BuildProgress("kernel build", Expected(1000, 500, "a table"), every_s=30, clock=clock, out=out)
    p.start()
    assert "expecting about 1000 steps and 500 s (from a table)" in out.getvalue()
    for _ in range(50):  # 5% in 40 s: too early for a rate, the expected seconds stand
        p.line("  CC      a.o\n")
    clock.now += 40
    p.line("  CC      b.o\n")
    assert "51/1000 steps (5%), 40 s, about 460 s left" in out.getvalue().splitlines()[-1]
    for _ in range(448):  # half done in 400 s, on a host slower than the table's: 800 s in all
        p.line("  CC      c.o\n")
    clock.now += 360
    p.line("  CC      d.o\n")
    assert out.getvalue().splitlines()[-1].endswith("500/1000 steps (50%), 400 s, about 400 s left")
    assert (p.first_estimate_s, p.last_estimate_s) == (500.0, 800.0)
    clock.now += 420
    p.done()
    assert out.getvalue().splitlines()[-1] == "  kernel build: done in 820 s, 500 steps (estimated 800 s)"


def test_no_line_between_reports_and_none_without_an_estimate():
    clock, out = Clock(), io.StringIO()
    p = BuildProgress("kernel build", None, every_s=30, clock=clock, out=out)
    p.start()
    p.line("  CC      a.o\n")
    clock.now += 10
    p.line("  CC      b.o\n")
    assert out.getvalue() == ""
    clock.now += 25
    p.line("  CC      c.o\n")
    assert out.getvalue() == "  kernel build: 3 steps (3 files compiled), 35 s\n"


def _tree(path: Path, immutable: bool = True) -> KernelTree:
    return KernelTree(path, "6.12.117", "debian:linux-source-6.12=test", immutable)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "builds").mkdir(parents=True)
    return tmp_path / "cache"


def test_expected_from_the_previous_build_then_the_same_config_then_the_table(cache: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    config = "CONFIG_MMU_NOTIFIER=y\n"
    tree = _tree(tmp_path / "src")
    monkeypatch.setattr(build, "ESTIMATES", tmp_path / "no-table.yaml")
    previous = {"from_scratch": True, "steps": 1990, "build_s": 700.0}
    assert expected_build(tree, "k", config, previous) == Expected(1990, 700.0, "the previous build of this tree "
                                                                                  "and config")
    # an incremental build's figures say nothing of a build from scratch
    assert expected_build(tree, "k", config, {**previous, "from_scratch": False}) is None
    other = cache / "builds" / "6.12.117-other"
    other.mkdir()
    (other / build.STAMP).write_text(json.dumps({"from_scratch": True, "steps": 1800, "build_s": 600.0,
                                                  "config_sha": config_sha(config)}))
    got = expected_build(tree, "k", config)
    assert got is not None and (got.steps, got.seconds) == (1800, 600.0) and str(other) in got.source
    table = tmp_path / "estimates.yaml"
    table.write_text(f'- {{series: "6.12", config: {config_sha("x")}, what: a config, steps: 1500, seconds: 400}}\n')
    monkeypatch.setattr(build, "ESTIMATES", table)
    got = expected_build(tree, "k", "x")
    assert got is not None and (got.steps, got.seconds) == (1500, 400) and "a config" in got.source
    got = expected_build(tree, "k", "another config")  # the series' row, said to be a rough guide
    assert got is not None and got.steps == 1500 and "rough guide" in got.source
    assert expected_build(KernelTree(tree.path, "7.3.4", "x", True), "k", "another config") is None


def test_every_table_row_is_well_formed():
    import yaml

    rows = yaml.safe_load(build.ESTIMATES.read_text())
    assert rows and all({"series", "config", "what", "steps", "seconds"} <= set(r) for r in rows)
    assert all(len(r["config"]) == 16 and r["steps"] > 1000 and r["seconds"] > 100 for r in rows)


def test_an_unchanged_user_tree_skips_make_and_an_edit_does_not(cache: Path, tmp_path: Path):
    src = tmp_path / "linux"
    (src / "mm").mkdir(parents=True)
    (src / "mm" / "rmap.c").write_text("int x;\n")
    tree = KernelTree(src, "6.12.117", f"path:{src}", immutable=False)
    assert not build.unchanged_since_build(tree, "k")  # never built
    outdir = build.build_dir(tree, "k")
    assert outdir.parent == cache / "builds" and not str(outdir).startswith(str(src))
    (outdir / build.BUILD_STARTED).touch()
    past = time.time() - 60
    os.utime(src / "mm" / "rmap.c", (past, past))
    assert build.unchanged_since_build(tree, "k")
    (src / "mm" / "rmap.c").write_text("int y;\n")  # the maintainer's edit
    assert not build.unchanged_since_build(tree, "k")


def test_a_user_trees_build_directory_follows_its_path_not_its_commit(tmp_path: Path):
    clean = KernelTree(tmp_path, "6.12.117", "git:abc", immutable=False)
    dirty = KernelTree(tmp_path, "6.12.117", "git:abc-dirty", immutable=False)
    assert build.config_key(clean, "c") == build.config_key(dirty, "c")
    debian = [KernelTree(tmp_path, "6.12.117", f"debian:x={v}", immutable=True) for v in ("1", "2")]
    assert build.config_key(debian[0], "c") != build.config_key(debian[1], "c")


def test_a_user_trees_config_is_remembered_until_a_kconfig_changes(tmp_path: Path):
    from harness.kernel.config import kconfig_changed_since

    src = tmp_path / "linux"
    (src / "mm").mkdir(parents=True)
    for name in ("mm/Kconfig", "mm/rmap.c", "Makefile"):
        (src / name).write_text("x\n")
        past = time.time() - 60
        os.utime(src / name, (past, past))
    memo = tmp_path / "memo.json"
    memo.write_text("{}")
    tree = KernelTree(src, "6.12.117", "git:abc-dirty", immutable=False)
    assert not kconfig_changed_since(tree, memo)
    (src / "mm" / "rmap.c").write_text("y\n")  # an edit of code: the same .config
    assert not kconfig_changed_since(tree, memo)
    (src / "mm" / "Kconfig").write_text("config NEW\n")
    assert kconfig_changed_since(tree, memo)


def test_the_images_view_of_a_build_changes_with_its_modules_not_its_vmlinux(tmp_path: Path):
    from harness.kernel.build import KernelBuild, modules_fingerprint

    (tmp_path / "lib").mkdir()
    (tmp_path / "modules.order").write_text("lib/test_hmm.o\n")
    (tmp_path / "lib" / "test_hmm.ko").write_bytes(b"ko")
    (tmp_path / "vmlinux").write_bytes(b"v1")
    b = KernelBuild(_tree(tmp_path), tmp_path, "k", "6.12.117")
    before = modules_fingerprint(b)
    (tmp_path / "vmlinux").write_bytes(b"v2")  # an edit of mm/rmap.c relinks vmlinux only
    assert modules_fingerprint(b) == before
    os.utime(tmp_path / "lib" / "test_hmm.ko", ns=(0, time.time_ns() + 10**9))  # a relinked module
    assert modules_fingerprint(b) != before
    assert modules_fingerprint(KernelBuild(b.tree, tmp_path, "k", "6.12.118")) != modules_fingerprint(b)


def test_a_patched_tree_that_touches_no_kconfig_takes_its_bases_config(cache: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    from harness.kernel import config

    composed: list[KernelTree] = []

    def compose(tree: KernelTree, spec: config.ConfigSpec, log: Path) -> tuple[Path, str, str]:
        composed.append(tree)
        out = tmp_path / f"composed-{len(composed)}"
        out.write_text("CONFIG_MMU_NOTIFIER=y\n")
        return out, build.config_key(tree, out.read_text()), "why"

    monkeypatch.setattr(config, "compose", compose)
    base = KernelTree(tmp_path / "base", "6.12.117", "debian:linux-source-6.12=1", immutable=True)
    patched = KernelTree(tmp_path / "p", "6.12.117", "debian:linux-source-6.12=1+abc", immutable=True, base=base,
                         changed=("mm/rmap.c",))
    got = config.configure(patched, config.ConfigSpec())
    assert composed == [base]  # the base's composition, once
    assert got.config.read_text() == "CONFIG_MMU_NOTIFIER=y\n" and got.tree == patched
    text = "CONFIG_MMU_NOTIFIER=y\n"
    assert got.key == build.config_key(patched, text) != build.config_key(base, text)
    kconfig_patch = KernelTree(tmp_path / "q", "6.12.117", "debian:linux-source-6.12=1+def", immutable=True,
                               base=base, changed=("mm/Kconfig", "mm/rmap.c"))
    config.configure(kconfig_patch, config.ConfigSpec())
    assert composed == [base, kconfig_patch]
    assert [config._configures(n) for n in ("arch/x86/Kconfig.cpu", "Makefile", "mm/Makefile",
                                            "scripts/kconfig/conf.c", "arch/x86/configs/x86_64_defconfig")] == [
        True, True, False, True, True]
