"""`harness kernel`: build (or find cached) the kernel and image; print their paths as JSON.

    harness kernel [--kernel-src KSRC] [--notifier on|off] [--fragment NAME]... [--pack OUT.tar.zst]
    harness kernel --import ARTIFACT.tar.zst

--pack also writes the build as an artifact (harness/kernel/artifact.py: what a cell needs, not the object
tree); --import unpacks one into this cache and prepares its kernel from it, with no compiler work on the kernel.
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
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    with progress_to_stderr():  # a build's progress, unpacking, apt: stdout is the JSON document's alone
        result = kernel(KernelRequest(options.kernel_choice(args), tuple(args.set), args.pack, args.import_))
    print(json.dumps(result.describe(), indent=2))
    return 0
