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
            run_logged(["make", "-C", str(build.dir), f"M={tmp}", "CC=ccache gcc", "modules"],
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
