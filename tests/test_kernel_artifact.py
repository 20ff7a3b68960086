"""harness/kernel/artifact.py on a fabricated tree and build (no make, no QEMU): what goes into an artifact and
what stays out, and what importing it into another cache gives (tests/test_kernel_artifact_e2e.py does it for
real, with a suite run on the import)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.kernel import artifact, config, source
from harness.kernel.build import STAMP, KernelBuild
from harness.kernel.kconfig import ConfigError

KEY = "0123456789abcdef"
IDENTITY = "debian:linux-source-6.12=6.12.117-1~deb12u1"
BUILD = f"src/linux-source-6.12/harness-build-{KEY}"


def touch(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fabricate(cache: Path) -> tuple[KernelBuild, Path, list[Path]]:
    tree = cache / "src/linux-source-6.12"
    touch(tree / "Makefile", "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n")
    for rel in ("Kconfig", "arch/x86/Kconfig", "arch/x86/Makefile", "arch/x86/Makefile_32.cpu",
                "arch/x86/include/asm/page.h", "arch/x86/include/uapi/asm/mman.h", "include/linux/mmu_notifier.h",
                "scripts/Makefile.build", "scripts/Kbuild.include", "scripts/kconfig/conf.c", "scripts/unifdef.c",
                "mm/mmap.c", "mm/gup_test.h", "kernel/fork.c", "lib/test_hmm_uapi.h", "lib/test_hmm.c",
                "tools/include/uapi/linux/mman.h", "tools/testing/selftests/mm/hmm-tests.c",
                "tools/testing/selftests/mm/Makefile", "tools/testing/selftests/kselftest_harness.h",
                "tools/testing/selftests/lib.mk", "tools/perf/builtin-top.c"):
        touch(tree / rel)
    touch(tree / source.STAMP, "6.12.117-1~deb12u1")
    build = tree / f"harness-build-{KEY}"
    touch(build / "Makefile", "include ../Makefile\n")
    touch(build / ".config", "CONFIG_MMU_NOTIFIER=y\nCONFIG_OBJTOOL=y\nCONFIG_MODULES=y\n")
    for rel in ("Module.symvers", "System.map", "arch/x86/boot/bzImage", "include/config/auto.conf",
                "include/config/kernel.release", "include/generated/autoconf.h", "arch/x86/include/generated/asm/x.h",
                "scripts/basic/fixdep", "scripts/mod/modpost", "scripts/module.lds", "scripts/mod/modpost.o",
                "scripts/unifdef",
                "scripts/basic/.fixdep.cmd", "tools/objtool/objtool", "usr/include/linux/mman.h",
                "mm/mmap.o", "vmlinux", "vmlinux.o", "harness-config-why.txt", "build.log",
                "harness-modules/lib/modules/6.12.117/modules.dep", "harness-guest-modules/probe-new/mmu_probe.ko",
                "harness-guest-modules/probe-old/mmu_probe.ko", "harness-userprogs/cow-1/cow",
                "harness-kprobe/layout-1.json"):
        touch(build / rel)
    (build / "harness-modules/lib/modules/6.12.117/build").symlink_to(build)
    touch(build / STAMP, json.dumps({"release": "6.12.117", "key": KEY, "build_s": 600.0}))
    links = cache / "builds"
    links.mkdir(parents=True)
    (links / f"6.12.117-{KEY}").symlink_to(build)
    touch(cache / "configure/by-key" / f"6.12.117-{KEY}.config", (build / ".config").read_text())
    programs = cache / "guest/programskey"
    touch(programs / "munmap")
    kernel = KernelBuild(source.KernelTree(tree, "6.12.117", IDENTITY, immutable=True), links / f"6.12.117-{KEY}",
                         KEY, "6.12.117")
    return kernel, programs, [build / "harness-guest-modules/probe-new/mmu_probe.ko"]


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> artifact.Packed:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "here"))
    kernel, programs, modules = fabricate(tmp_path / "here")
    return artifact.pack(kernel, "debian:6.12", "on", (), (), programs, modules, tmp_path / "k.tar.zst")


def names(path: Path) -> set[str]:
    data = subprocess.run(["zstd", "-d", "-c", str(path)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def test_what_an_artifact_holds(packed: artifact.Packed):
    got = names(packed.path)
    for rel in ("Makefile", "arch/x86/Makefile", "arch/x86/Makefile_32.cpu", "arch/x86/include/asm/page.h",
                "include/linux/mmu_notifier.h", "scripts/Makefile.build", "mm/gup_test.h", "lib/test_hmm_uapi.h",
                "tools/include/uapi/linux/mman.h", "tools/testing/selftests/mm/hmm-tests.c", source.STAMP):
        assert f"src/linux-source-6.12/{rel}" in got, rel
    for rel in (".config", "Module.symvers", "System.map", "arch/x86/boot/bzImage", "include/config/auto.conf",
                "include/generated/autoconf.h", "arch/x86/include/generated/asm/x.h", "scripts/basic/fixdep",
                "scripts/mod/modpost", "scripts/module.lds", "tools/objtool/objtool", "usr/include/linux/mman.h",
                "harness-modules/lib/modules/6.12.117/modules.dep", "harness-guest-modules/probe-new/mmu_probe.ko",
                "harness-kprobe/layout-1.json", STAMP, "Makefile", "build.log"):
        assert f"{BUILD}/{rel}" in got, rel
    # No kernel C source, no object, not the old guest modules, no link back into this cache
    for rel in ("mm/mmap.c", "kernel/fork.c", "lib/test_hmm.c", "tools/perf/builtin-top.c", "scripts/kconfig/conf.c"):
        assert f"src/linux-source-6.12/{rel}" not in got, rel
    for rel in ("mm/mmap.o", "vmlinux", "vmlinux.o", "scripts/mod/modpost.o", "scripts/unifdef",
                "scripts/basic/.fixdep.cmd", "harness-guest-modules/probe-old/mmu_probe.ko",
                "harness-userprogs/cow-1/cow",
                "harness-modules/lib/modules/6.12.117/build"):
        assert f"{BUILD}/{rel}" not in got, rel
    assert {f"configure/by-key/6.12.117-{KEY}.config", "guest/programskey/munmap", artifact.MANIFEST} <= got
    assert packed.manifest["key"] == KEY and packed.manifest["build"]["build_s"] == 600.0


def test_import_into_an_empty_cache(packed: artifact.Packed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    there = tmp_path / "there"
    monkeypatch.setenv("HARNESS_CACHE", str(there))
    manifest = artifact.import_artifact(packed.path)
    tree = there / "src/linux-source-6.12"
    assert manifest["identity"] == IDENTITY and (tree / source.IMPORTED).exists()
    link = there / "builds" / f"6.12.117-{KEY}"
    assert link.is_symlink() and os.readlink(link) == str(tree / f"harness-build-{KEY}")
    assert json.loads((link / STAMP).read_text())["build_s"] == 600.0
    assert (there / "guest/programskey/munmap").exists()

    # The Debian tree now resolves to the import, without apt; its configuration comes from the import's memory
    resolved = source.resolve("debian:6.12")
    assert resolved.imported and resolved.path == tree and resolved.identity == IDENTITY
    assert config.configure(resolved, config.config_spec("on", "6.12")).key == KEY
    with pytest.raises(ConfigError, match="imported from a build artifact"):
        config.configure(resolved, config.config_spec("off", "6.12"))


def test_an_import_made_by_other_fragments_is_refused(packed: artifact.Packed, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "unpacked"
    work.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(packed.path), "-C", str(work)], check=True)
    manifest = json.loads((work / artifact.MANIFEST).read_text())
    (work / artifact.MANIFEST).write_text(json.dumps({**manifest, "spec_digest": "0" * 16}))
    tampered = tmp_path / "tampered.tar.gz"
    # the manifest first, as --pack writes it (an import reads it before anything else)
    subprocess.run(["tar", "-czf", str(tampered), "-C", str(work), artifact.MANIFEST, "src", "configure", "guest"],
                   check=True)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "there"))
    with pytest.raises(artifact.ArtifactError, match="other fragments or another config engine"):
        artifact.import_artifact(tampered)
    assert not (tmp_path / "there/src/linux-source-6.12").exists()

    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not zstd")
    with pytest.raises(artifact.ArtifactError):
        artifact.import_artifact(junk)


def test_only_debian_trees_are_packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "here"))
    kernel, programs, modules = fabricate(tmp_path / "here")
    mine = KernelBuild(source.KernelTree(kernel.tree.path, "6.12.117", "git:" + "a" * 40, immutable=False),
                       kernel.dir, KEY, "6.12.117")
    with pytest.raises(artifact.ArtifactError, match="only builds of Debian's trees"):
        artifact.pack(mine, "/home/me/linux", "on", (), (), programs, modules, tmp_path / "k.tar.zst")


def test_import_next_to_a_full_tree_and_again(packed: artifact.Packed, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    there = tmp_path / "there"
    monkeypatch.setenv("HARNESS_CACHE", str(there))
    full = there / "src/linux-source-6.12"
    touch(full / "mm/mmap.c")  # a full tree of the same package version, unpacked here before
    touch(full / source.STAMP, "6.12.117-1~deb12u1")
    artifact.import_artifact(packed.path)
    assert not (full / source.IMPORTED).exists(), "a full tree stays full: only the build is added"
    assert (full / "mm/mmap.c").exists() and (full / f"harness-build-{KEY}" / STAMP).exists()
    assert os.readlink(there / "builds" / f"6.12.117-{KEY}") == str(full / f"harness-build-{KEY}")

    artifact.import_artifact(packed.path)  # twice: the finished build is kept as it is
    assert (full / f"harness-build-{KEY}" / STAMP).exists()

    (full / source.STAMP).write_text("6.12.999-1")
    with pytest.raises(artifact.ArtifactError, match=r"holds debian:linux-source-6.12=6.12.999-1"):
        artifact.import_artifact(packed.path)


def test_kbuilds_absolute_paths_follow_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # 7.x's outputmakefile names both trees by absolute path even for a build inside the source tree
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "here"))
    kernel, programs, modules = fabricate(tmp_path / "here")
    src, obj = kernel.tree.path, kernel.dir.resolve()
    (obj / "Makefile").write_text(f"# Automatically generated by {src}/Makefile: don't edit\n"
                                  f"export KBUILD_OUTPUT = {obj}\ninclude {src}/Makefile\n")
    packed = artifact.pack(kernel, "debian:6.12", "on", (), (), programs, modules, tmp_path / "k.tar.zst")
    there = tmp_path / "there"
    monkeypatch.setenv("HARNESS_CACHE", str(there))
    artifact.import_artifact(packed.path)
    new_src = there / "src/linux-source-6.12"
    assert (new_src / f"harness-build-{KEY}/Makefile").read_text() == (
        f"# Automatically generated by {new_src}/Makefile: don't edit\n"
        f"export KBUILD_OUTPUT = {new_src}/harness-build-{KEY}\ninclude {new_src}/Makefile\n")
