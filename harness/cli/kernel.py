"""`harness kernel`: build (or find cached) the kernel and image; print their paths as JSON.

    harness kernel [--kernel-src KSRC] [--arch arm64] [--notifier on|off] [--fragment NAME]... [--pack OUT.tar.zst]
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
from pathlib import Path

from harness.app.kernel import KernelRequest, kernel
from harness.cli import options
from harness.cli.output import progress_to_stderr

EXITS = ((0, "the kernel and image are ready (their paths are on stdout, as JSON)"),)


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "kernel", "build (or find cached) the kernel and image; print their paths; pack or "
                           "import a build artifact", *EXITS, description=__doc__)
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
    with progress_to_stderr():  # a build's progress, unpacking, apt: stdout is the JSON document's alone
        result = kernel(KernelRequest(options.kernel_choice(args), tuple(args.set), args.pack, args.import_,
                                      args.sha256, args.max_files, args.max_unpacked_mib))
    print(json.dumps(result.describe(), indent=2))
    return 0
