"""`harness kernel`: build (or find cached) the kernel and image; print their paths as JSON."""

from __future__ import annotations

import argparse
import json

from harness.cli import options
from harness.cli.options import KernelChoice
from harness.kernel.prepare import prepare


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernel", help="build (or find cached) the kernel and image; print their paths")
    options.add_kernel(p)
    p.add_argument("--set", action="append", default=[], metavar="SYM=VALUE",
                   help="one more config setting on top of the fragments (checked like them)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    kernel = KernelChoice.from_args(args)
    prepared = prepare(kernel.kernel_src, kernel.notifier, tuple(args.set), kernel.fragments)
    print(json.dumps({"bzImage": str(prepared.build.bzimage), "config": str(prepared.build.config),
                      "release": prepared.build.release, "initramfs": str(prepared.image.initramfs),
                      "tree": prepared.tree.identity, "timings": prepared.timings}, indent=2))
    return 0
