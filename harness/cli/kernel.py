"""`harness kernel`: build (or find cached) the kernel and image; print their paths as JSON.

    harness kernel [--kernel-src KSRC] [--notifier on|off] [--fragment NAME]... [--pack OUT.tar.zst]
    harness kernel --import ARTIFACT.tar.zst [--sha256 HEX] [--max-files N] [--max-unpacked-mib N]

--pack also writes the build as an artifact (harness/kernel/artifact.py: what a cell needs, not the object
tree), and its sha256 (in the printed document, and in OUT.tar.zst.sha256 as sha256sum writes it); --import
unpacks one into this cache and prepares its kernel from it, with no compiler work on the kernel. An artifact
is untrusted input: --sha256 checks the file before anything is unpacked, and every member is checked as it is
unpacked (harness/kernel/artifact_unpack.py), within configs/artifact-limits.yaml's limits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli import options
from harness.cli.options import KernelChoice
from harness.cli.output import progress_to_stderr
from harness.errors import UserError
from harness.kernel import artifact
from harness.kernel.artifact_manifest import load_limits
from harness.kernel.build import build_guest_modules, build_probe_module
from harness.kernel.image import build_guest_programs
from harness.kernel.prepare import Prepared, prepare
from harness.kernel.source import DEFAULT_SERIES
from harness.kernel.userprogs import uapi_headers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernel", help="build (or find cached) the kernel and image; print their paths; pack or "
                       "import a build artifact", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_kernel(p)
    p.add_argument("--set", action="append", default=[], metavar="SYM=VALUE",
                   help="one more config setting on top of the fragments (checked like them)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--pack", type=Path, default=None, metavar="OUT",
                      help="also write the build as an artifact (.tar.zst, .tar.gz or .tar) for `--import` elsewhere")
    what.add_argument("--import", dest="import_", type=Path, default=None, metavar="ARTIFACT",
                      help="unpack a build artifact into the cache (HARNESS_CACHE) and prepare its kernel from it")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="with --import: the artifact's sha256 (as --pack printed it); a different file is refused")
    p.add_argument("--max-files", type=int, default=None, metavar="N",
                   help="with --import: at most N tar members (default: configs/artifact-limits.yaml)")
    p.add_argument("--max-unpacked-mib", type=int, default=None, metavar="N",
                   help="with --import: at most N MiB of files unpacked (default: configs/artifact-limits.yaml)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.import_:
        return import_(args)
    if args.sha256 or args.max_files or args.max_unpacked_mib:
        raise UserError("--sha256, --max-files and --max-unpacked-mib go with --import")
    kernel = KernelChoice.from_args(args)
    with progress_to_stderr():  # a build's progress, unpacking, apt: stdout is the JSON document's alone
        prepared = prepare(kernel.kernel_src, kernel.notifier, tuple(args.set), kernel.fragments)
        summary = describe(prepared)
        if args.pack:
            packed = pack(prepared, kernel.kernel_src or f"debian:{DEFAULT_SERIES}", tuple(args.set), args.pack)
            summary["artifact"] = {"path": str(packed.path), "bytes": packed.bytes,
                                   "unpacked_bytes": packed.unpacked_bytes, "files": packed.files,
                                   "sha256": packed.sha256}
    print(json.dumps(summary, indent=2))
    return 0


def describe(prepared: Prepared) -> dict:
    return {"bzImage": str(prepared.build.bzimage), "config": str(prepared.build.config),
            "release": prepared.build.release, "initramfs": str(prepared.image.initramfs),
            "tree": prepared.tree.identity, "timings": prepared.timings}


def pack(prepared: Prepared, ksrc: str, settings: tuple[str, ...], out: Path) -> artifact.Packed:
    """The artifact of a prepared kernel, with what its cells would otherwise compile made first."""
    build = prepared.build
    uapi_headers(build)  # `make headers`: the kprograms and selftests compile against them
    if build.has("MMU_NOTIFIER"):
        from harness.observe.kprobe import range_layout  # compiled once against the build, kept in it

        range_layout(build)
    modules = build_guest_modules(build, "faults")
    if build.has("MMU_NOTIFIER"):
        modules.append(build_probe_module(build))
    packed = artifact.pack(build, ksrc, prepared.notifier, prepared.fragments, settings, build_guest_programs(),
                           modules, out)
    print(f"packed {packed.files} files ({packed.unpacked_bytes / 2**20:.1f} MiB) into {out}: "
          f"{packed.bytes / 2**20:.1f} MiB, sha256 {packed.sha256}", file=sys.stderr)
    return packed


def import_(args: argparse.Namespace) -> int:
    if args.set or args.fragment or args.notifier != "on":
        raise UserError("--import takes the kernel from the artifact: no --notifier, --fragment or --set with it")
    limits = load_limits(files=args.max_files, unpacked_mib=args.max_unpacked_mib)
    with progress_to_stderr():
        m = artifact.import_artifact(args.import_, args.sha256, limits)
        prepared = prepare(m["ksrc"], m["notifier"], tuple(m["settings"]), tuple(m["fragments"]))
    if prepared.build.key != m["key"]:  # prepare found another configuration: the import did not take
        raise artifact.ArtifactError(f"prepared build {prepared.build.key}, imported {m['key']}")
    imported = {k: m[k] for k in ("ksrc", "notifier", "fragments", "key", "identity", "made")}
    imported["sha256"] = args.sha256  # checked before unpacking; null: not checked
    print(json.dumps({**describe(prepared), "imported": imported}, indent=2))
    return 0
