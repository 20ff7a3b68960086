"""guest/ modules are rebuilt when a header they compiled against changes: the record their build leaves
(Kbuild's .cmd deps, by content) and its check. A real build: tests/test_kernel_artifact_e2e.py builds the probe
against an imported build and finds the shipped one unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from harness.kernel.guest_modules import HEADERS, header_digests, headers_changed

# The shape of a .cmd file Kbuild writes for an out-of-tree object (fixdep), trimmed from a real 6.12 build.
CMD = """savedcmd_/b/m/mmu_probe.o := ccache gcc -Wp,-MMD,/b/m/.mmu_probe.o.d -nostdinc ...

source_/b/m/mmu_probe.o := /b/m/mmu_probe.c

deps_/b/m/mmu_probe.o := \\
  ../include/linux/compiler-version.h \\
    $(wildcard include/config/CC_VERSION_TEXT) \\
  ../include/linux/mmu_notifier.h \\
  include/generated/autoconf.h \\

/b/m/mmu_probe.o: $(deps_/b/m/mmu_probe.o)

$(deps_/b/m/mmu_probe.o):
"""


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    build, module = tmp_path / "tree" / "harness-build-1", tmp_path / "tree" / "harness-build-1" / "mods" / "probe"
    for name, text in (("tree/include/linux/compiler-version.h", "v1"), ("tree/include/linux/mmu_notifier.h",
                       "struct mmu_notifier_range { int event; };"),
                       ("tree/harness-build-1/include/generated/autoconf.h", "#define CONFIG_MMU_NOTIFIER 1")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    module.mkdir(parents=True)
    (module / ".mmu_probe.o.cmd").write_text(CMD)
    (module / HEADERS).write_text(json.dumps(header_digests(module, build)))
    return build, module


def test_the_record_names_every_header_of_the_deps_and_no_wildcard(tmp_path: Path):
    build, module = _tree(tmp_path)
    assert sorted(json.loads((module / HEADERS).read_text())) == [
        "../include/linux/compiler-version.h", "../include/linux/mmu_notifier.h", "include/generated/autoconf.h"]
    assert not headers_changed(module, build)


def test_a_changed_header_of_the_tree_or_the_build_is_seen(tmp_path: Path):
    build, module = _tree(tmp_path)
    (tmp_path / "tree/include/linux/mmu_notifier.h").write_text("struct mmu_notifier_range { long x; int event; };")
    assert headers_changed(module, build)
    build, module = _tree(tmp_path / "again")
    (build / "include/generated/autoconf.h").write_text("")
    assert headers_changed(module, build)


def test_a_header_gone_is_a_change_and_a_module_without_a_record_is_kept(tmp_path: Path):
    build, module = _tree(tmp_path)
    (tmp_path / "tree/include/linux/compiler-version.h").unlink()
    assert headers_changed(module, build)
    (module / HEADERS).unlink()
    assert not headers_changed(module, build)  # an older cache's modules: taken as they are


def test_gpusvm_is_built_only_against_a_tree_and_config_that_have_what_it_uses(tmp_path: Path):
    """guest/gpusvm needs the tree's GPU SVM library with 7.3's per-pages API, and DRM_GPUSVM's dependency and
    selections in the config; each missing piece is named."""
    from harness.kernel.build import KernelBuild
    from harness.kernel.guest_modules import gpusvm_unavailable
    from harness.kernel.source import KernelTree

    tree = KernelTree(tmp_path, "7.3.4", "debian:linux-source-7.3=test", True)
    build = KernelBuild(tree, tmp_path / "b", "k", "7.3.4")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".config").write_text("CONFIG_DRM=y\nCONFIG_HMM_MIRROR=y\n")
    assert "no GPU SVM library" in (gpusvm_unavailable(build) or "")
    header = tmp_path / "include/drm/drm_gpusvm.h"
    header.parent.mkdir(parents=True)
    header.write_text("int drm_gpusvm_init(struct drm_gpusvm *gpusvm, const char *name, struct drm_device *drm);\n")
    assert "drm_gpusvm_init_pages" in (gpusvm_unavailable(build) or "")  # 7.2's API
    header.write_text("static inline void drm_gpusvm_init_pages(struct drm_gpusvm_pages *p, struct drm_device *d)\n")
    assert "CONFIG_MMU_NOTIFIER not set" in (gpusvm_unavailable(build) or "")
    (tmp_path / "b" / ".config").write_text("CONFIG_DRM=y\nCONFIG_HMM_MIRROR=y\nCONFIG_MMU_NOTIFIER=y\n")
    assert gpusvm_unavailable(build) is None
