"""The `kernel` use case: build (or find cached) a kernel and its image; pack it as an artifact or import one.

Also `KernelChoice`, the part of many requests that says which kernel a command runs on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.kernel import artifact
from harness.kernel.arch import HOST
from harness.kernel.artifact_manifest import load_limits
from harness.kernel.build import KernelBuild
from harness.kernel.guest_modules import image_modules
from harness.kernel.image import Image, build_guest_programs
from harness.kernel.prepare import Prepared, prepare
from harness.kernel.source import DEFAULT_SERIES, KernelTree
from harness.kernel.userprogs import uapi_headers


@dataclass(frozen=True)
class KernelChoice:
    """Which kernel a command runs on: a tree (None: Debian's default), the notifier axis, extra fragments."""

    kernel_src: str | None = None
    notifier: str = "on"
    fragments: tuple[str, ...] = ()
    arch: str = HOST  # configs/arches/: another architecture is cross-built and booted under TCG


@dataclass(frozen=True)
class KernelRequest:
    kernel: KernelChoice = field(default_factory=KernelChoice)
    settings: tuple[str, ...] = ()  # SYM=VALUE on top of the fragments (--set)
    pack: Path | None = None  # also write the build as an artifact here
    import_: Path | None = None  # instead: unpack this artifact into the cache and prepare its kernel
    sha256: str | None = None  # with import_: the artifact's sha256 (as --pack printed it), checked first
    max_files: int | None = None  # with import_: limits over configs/artifact-limits.yaml's
    max_unpacked_mib: int | None = None


@dataclass(frozen=True)
class KernelResult:
    tree: KernelTree
    build: KernelBuild
    image: Image
    timings: dict[str, float]
    packed: artifact.Packed | None = None
    imported: dict[str, Any] = field(default_factory=dict)  # the artifact's manifest, when --import

    @classmethod
    def of(cls, p: Prepared, packed: artifact.Packed | None = None, imported: dict[str, Any] | None = None,
           ) -> KernelResult:
        return cls(p.tree, p.build, p.image, p.timings, packed, imported or {})

    def describe(self) -> dict[str, Any]:
        """The JSON document `harness kernel` prints."""
        # "bzImage": the key readers of 2026-11 know, whatever the architecture's image is called
        doc: dict[str, Any] = {"arch": self.build.arch.name, "bzImage": str(self.build.kernel_image),
                               "config": str(self.build.config), "release": self.build.release,
                               "initramfs": str(self.image.initramfs),
                               "tree": self.tree.identity, "timings": self.timings}
        if self.packed:
            doc["artifact"] = {"path": str(self.packed.path), "bytes": self.packed.bytes,
                               "unpacked_bytes": self.packed.unpacked_bytes, "files": self.packed.files,
                               "sha256": self.packed.sha256}
        if self.imported:
            doc["imported"] = {k: self.imported[k] for k in ("ksrc", "notifier", "fragments", "key", "identity",
                                                             "made", "sha256")}
        return doc


def kernel(req: KernelRequest) -> KernelResult:
    if req.import_:
        return import_artifact(req)
    if req.sha256 or req.max_files or req.max_unpacked_mib:
        raise UserError("--sha256, --max-files and --max-unpacked-mib go with --import")
    k = req.kernel
    prepared = prepare(k.kernel_src, k.notifier, req.settings, k.fragments, k.arch)
    if not req.pack:
        return KernelResult.of(prepared)
    return KernelResult.of(prepared, pack(prepared, k.kernel_src or f"debian:{DEFAULT_SERIES}", req.settings,
                                          req.pack))


def pack(prepared: Prepared, ksrc: str, settings: tuple[str, ...], out: Path) -> artifact.Packed:
    """The artifact of a prepared kernel, with what its cells would otherwise compile made first."""
    build = prepared.build
    uapi_headers(build)  # `make headers`: the kprograms and selftests compile against them
    if build.has("MMU_NOTIFIER"):
        from harness.observe.kprobe import range_layout  # compiled once against the build, kept in it

        range_layout(build)
    packed = artifact.pack(build, ksrc, prepared.notifier, prepared.fragments, settings,
                           build_guest_programs(build.arch), image_modules(build), out)
    print(f"packed {packed.files} files ({packed.unpacked_bytes / 2**20:.1f} MiB) into {out}: "
          f"{packed.bytes / 2**20:.1f} MiB, sha256 {packed.sha256}", file=sys.stderr)
    return packed


def import_artifact(req: KernelRequest) -> KernelResult:
    assert req.import_
    if req.settings or req.kernel.fragments or req.kernel.notifier != "on" or req.kernel.arch != HOST:
        raise UserError("--import takes the kernel from the artifact: no --notifier, --fragment, --arch or --set "
                        "with it")
    limits = load_limits(files=req.max_files, unpacked_mib=req.max_unpacked_mib)
    m = {**artifact.import_artifact(req.import_, req.sha256, limits), "sha256": req.sha256}  # None: not checked
    prepared = prepare(m["ksrc"], m["notifier"], tuple(m["settings"]), tuple(m["fragments"]), m.get("arch", HOST))
    if prepared.build.key != m["key"]:  # prepare found another configuration: the import did not take
        raise artifact.ArtifactError(f"prepared build {prepared.build.key}, imported {m['key']}")
    return KernelResult.of(prepared, imported=m)
