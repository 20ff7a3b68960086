"""The out-of-tree modules of guest/ (the probe, the fault injectors), built against a kernel build.

Cached in the build's directory by their sources, and checked on every use against the headers their last
build compiled against: the list Kbuild wrote in each object's .cmd file (fixdep's `deps_`), each kept by its
content. A user's tree or a patch series that changes one of those headers (`struct mmu_notifier_range`, say)
rebuilds the module; a record of the sources alone kept a stale one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from harness import atomic, paths
from harness.kernel import sandbox
from harness.kernel.build import BuildError, KernelBuild, content_key, event_names_header, run_logged

HEADERS = ".harness-headers.json"  # {path as Kbuild wrote it: sha256 of its content} after a build
_DEP = re.compile(r"^\s+(\S+\.h)\s*\\?$", re.M)  # a header line of a .cmd file's deps_ list ($(wildcard) lines skip)


def build_probe_module(build: KernelBuild) -> Path:
    """guest/probe built against this kernel build, with the event names of this tree's enum."""
    if not build.has("MMU_NOTIFIER"):
        raise BuildError(f"CONFIG_MMU_NOTIFIER is not set in {build.config}: the probe module cannot exist there")
    (ko,) = build_guest_modules(build, "probe", {"mmu_probe_events.h": event_names_header(build.tree.path)})
    return ko


# drivers/gpu/drm/'s GPU SVM library, as its Makefile builds drm_gpusvm_helper.ko (guest/gpusvm/Kbuild)
GPUSVM_LIBRARY = ("drm_gpusvm.c", "drm_pagemap.c", "drm_pagemap_util.c")
GPUSVM_CONFIG = ("DRM", "HMM_MIRROR", "MMU_NOTIFIER")  # what DRM_GPUSVM depends on and selects


def gpusvm_unavailable(build: KernelBuild) -> str | None:
    """Why guest/gpusvm cannot be built against this kernel, or None."""
    header = build.tree.path / "include/drm/drm_gpusvm.h"
    if not header.exists():
        return f"{build.tree.path} has no GPU SVM library (include/drm/drm_gpusvm.h came in 6.15)"
    if "drm_gpusvm_init_pages" not in header.read_text(errors="replace"):
        # 7.2's drm_gpusvm_init takes the drm_device; guest/gpusvm is written against 7.3's per-pages one
        return "this tree's GPU SVM has no drm_gpusvm_init_pages() (7.3's API, which guest/gpusvm uses)"
    missing = [s for s in GPUSVM_CONFIG if not build.has(s)]
    return f"CONFIG_{', CONFIG_'.join(missing)} not set in {build.config}" if missing else None


def build_gpusvm_modules(build: KernelBuild) -> list[Path]:
    """drm_gpusvm_helper.ko, the tree's own GPU SVM library, and gpusvm_mirror.ko, the fake GPU driven by it."""
    if reason := gpusvm_unavailable(build):
        raise BuildError(reason)
    drm = build.tree.path / "drivers/gpu/drm"
    generated = {name: (drm / name).read_text() for name in GPUSVM_LIBRARY}
    generated["mmu_probe_events.h"] = event_names_header(build.tree.path)
    return build_guest_modules(build, "gpusvm", generated)


def image_modules(build: KernelBuild) -> list[Path]:
    """The modules of guest/ an image of this build carries (loaded only when asked: harness.modules=)."""
    modules = [build_probe_module(build)] if build.has("MMU_NOTIFIER") else []
    modules += build_guest_modules(build, "faults")
    try:
        return modules + ([] if gpusvm_unavailable(build) else build_gpusvm_modules(build))
    except BuildError:  # a tree whose GPU SVM moved under guest/gpusvm: its suite fails saying so, no other
        return modules


def build_guest_modules(build: KernelBuild, subdir: str, generated: dict[str, str] | None = None) -> list[Path]:
    """The modules of guest/SUBDIR (its Kbuild) built against this kernel: the cached ones if their sources and
    the headers they compiled against are unchanged, else built again."""
    src = paths.GUEST / subdir
    generated = generated or {}
    files = sorted(p for p in src.iterdir() if p.is_file())
    key = content_key(*(p.name.encode() + p.read_bytes() for p in files),
                      *(f"{name}\0{text}" for name, text in sorted(generated.items())))
    outdir = build.dir / "harness-guest-modules" / f"{subdir}-{key}"
    if not outdir.exists() or headers_changed(outdir, build.dir):
        with atomic.staged_dir(outdir) as tmp:
            for p in files:
                shutil.copy(p, tmp / p.name)
            for name, text in generated.items():
                (tmp / name).write_text(text)
            run_logged(["make", "-C", str(build.dir), f"M={tmp}", *build.arch.make_vars(), "modules"],
                       build.dir / "guest-modules.log", f"guest/{subdir} modules",
                       jail=sandbox.for_tree(build.tree, readable=(build.dir,), writable=(tmp,)))
            (tmp / HEADERS).write_text(json.dumps(header_digests(tmp, build.dir), indent=0, sort_keys=True))
    return sorted(outdir.glob("*.ko"))


def header_digests(module_dir: Path, build_dir: Path) -> dict[str, str]:
    """Every header the module's objects compiled against (their .cmd files), by content."""
    names = {m for cmd in module_dir.glob(".*.o.cmd") for m in _DEP.findall(cmd.read_text(errors="replace"))}
    return {name: _digest(build_dir, name) for name in sorted(names)}


def headers_changed(module_dir: Path, build_dir: Path) -> bool:
    """Whether a header the cached modules compiled against changed since. A module directory without the
    record (an older cache's) is taken as it is."""
    try:
        recorded = json.loads((module_dir / HEADERS).read_text())
    except (OSError, ValueError):
        return False
    return not isinstance(recorded, dict) or any(_digest(build_dir, n) != d for n, d in recorded.items())


def _digest(build_dir: Path, name: str) -> str:
    """A header Kbuild named relative to the build directory (`../include/...` in a tree the harness owns)."""
    try:
        return hashlib.sha256((build_dir / name).read_bytes()).hexdigest()
    except OSError:
        return "missing"
