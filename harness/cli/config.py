"""`harness config`: compose a kernel .config (make), say why a symbol has its value (explain), compare two (diff).

    harness config make [--kernel-src KSRC] [--base tinyconfig|allnoconfig|defconfig|PATH] [--fragment F]...
                        [--set SYM=V]... [--on SYM]... [--off SYM]... -o OUT
    harness config explain SYM [--kernel-src KSRC] [--config FILE]
    harness config diff A B

KSRC is a path, debian:X.Y (6.1, 6.12, 7.2, 7.3), or empty for Debian's 6.12, as for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.app.config import (
    ConfigDiffRequest,
    ConfigExplainRequest,
    ConfigMakeRequest,
    config_diff,
    config_explain,
    config_make,
)
from harness.cli import options

MAKE_EXITS = ((0, "the .config was written, and every requested value holds in it"),
              (2, "also: a request that does not stick (nothing is written then)"))


def register(sub: argparse._SubParsersAction) -> None:
    """Register `config` and its sub-commands; each sets `func`, which returns the exit code."""
    p = options.add_parser(sub, "config", "compose, explain and compare kernel .config files", (0, "done"),
                           description=__doc__)
    config_sub = p.add_subparsers(dest="config_command", required=True)

    m = options.add_parser(config_sub, "make", "write a .config from a base, fragments, settings and --on/--off",
                           *MAKE_EXITS,
                           description="Compose a .config with kconfiglib and check that every request stuck. "
                           "--off SYM also turns off whatever selects SYM; --on SYM picks the selector that "
                           "changes the fewest symbols. Every change is printed with its reason.")
    options.add_kernel(m, axis=False)
    m.add_argument("--base", default="tinyconfig", help="tinyconfig (default), allnoconfig, defconfig or a path")
    m.add_argument("--fragment", action="append", default=[], type=Path, metavar="F",
                   help="a config fragment (CONFIG_X=y lines); repeatable, later ones win")
    m.add_argument("--set", dest="settings", action="append", default=[], metavar="SYM=V",
                   help="one setting, applied after the fragments; repeatable")
    m.add_argument("--on", action="append", default=[], metavar="SYM", help="turn SYM on (y); repeatable")
    m.add_argument("--off", action="append", default=[], metavar="SYM",
                   help="turn SYM off, with whatever selects it; repeatable; applied last")
    m.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="the .config to write")
    m.set_defaults(func=cmd_make)

    e = options.add_parser(config_sub, "explain", "why a symbol has its value: dependencies, selectors, defaults",
                           (0, "explained"))
    e.add_argument("symbol", metavar="SYM")
    options.add_kernel(e, axis=False)
    e.add_argument("--config", type=Path, metavar="FILE",
                   help="the .config to explain (default: the tree's defaults)")
    e.set_defaults(func=cmd_explain)

    d = options.add_parser(config_sub, "diff", "symbols whose values differ between two .config files",
                           (0, "the differences were printed (none is also 0)"))
    d.add_argument("a", type=Path, metavar="A")
    d.add_argument("b", type=Path, metavar="B")
    d.set_defaults(func=cmd_diff)


def cmd_make(args: argparse.Namespace) -> int:
    result = config_make(ConfigMakeRequest(args.output, args.kernel_src, args.base, tuple(args.fragment),
                                           tuple(args.settings), tuple(args.on), tuple(args.off), args.arch))
    print(f"wrote {result.output}: all {result.requests} requested value(s) hold")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    print(config_explain(ConfigExplainRequest(args.symbol, args.kernel_src, args.config, args.arch)))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    print(config_diff(ConfigDiffRequest(args.a, args.b)))
    return 0
