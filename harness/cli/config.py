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

from harness.cli import options
from harness.kernel import composition, kconfig, trees
from harness.kernel.kconfig import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Register `config` and its sub-commands; each sets `func`, which returns the exit code."""
    p = sub.add_parser("config", help="compose, explain and compare kernel .config files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_sub = p.add_subparsers(dest="config_command", required=True)

    m = config_sub.add_parser("make", help="write a .config from a base, fragments, settings and --on/--off",
                       description="Compose a .config with kconfiglib and check that every request stuck. "
                       "--off SYM also turns off whatever selects SYM; --on SYM picks the selector that "
                       "changes the fewest symbols. Every change is printed with its reason.")
    _tree_arg(m)
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

    e = config_sub.add_parser("explain", help="why a symbol has its value: dependencies, selectors, defaults")
    e.add_argument("symbol", metavar="SYM")
    _tree_arg(e)
    e.add_argument("--config", type=Path, metavar="FILE",
                   help="the .config to explain (default: the tree's defaults)")
    e.set_defaults(func=cmd_explain)

    d = config_sub.add_parser("diff", help="symbols whose values differ between two .config files")
    d.add_argument("a", type=Path, metavar="A")
    d.add_argument("b", type=Path, metavar="B")
    d.set_defaults(func=cmd_diff)


def _tree_arg(p: argparse.ArgumentParser) -> None:
    options.add_kernel(p, axis=False)


def _tree(args: argparse.Namespace) -> Path:
    """The tree --kernel-src names, as every command names one (a path, debian:X.Y, or Debian's default)."""
    return trees.resolve(args.kernel_src).path


def cmd_make(args: argparse.Namespace) -> int:
    """Compose, print what the engine changed and why, then write the .config only if every request holds."""
    requests = [req for frag in args.fragment for req in kconfig.parse_fragment(frag)]
    requests += [kconfig.parse_setting(text) for text in args.settings]
    tree = _tree(args)
    version = kconfig.tree_version(tree)
    kconf = kconfig.load_tree(tree, version)
    result = composition.compose(kconf, args.base, requests, off=args.off, on=args.on)
    print(f"kernel {kconf.srctree} ({version}), base {args.base}, "
          f"{len(args.fragment)} fragment(s), {len(args.settings)} --set")
    for step in result.steps:
        print(f"{step.request.origin} {step.request.symbol}:")
        if not step.changes:
            print(f"  nothing to do: CONFIG_{step.request.symbol} is already {step.request.value}")
        for change in step.changes:
            print(f"  {change}")
        if step.also_moved:
            print(f"  {len(step.also_moved)} more symbol(s) moved with these: {_short_list(step.also_moved)}")
    if result.overridden:
        print("fragment/--set requests overridden by --on/--off:")
        for req in result.overridden:
            print(f"  {req.origin}: CONFIG_{req.symbol}={req.value}")
    if result.skipped:
        print("not in this tree, so already not set: "
              + ", ".join(f"CONFIG_{req.symbol} ({req.origin})" for req in result.skipped))
    try:
        kconfig.write_verified(kconf, args.output, result.requests)
    except OSError as e:
        raise ConfigError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"wrote {args.output}: all {len(result.requests)} requested value(s) hold")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print why SYM has its value in FILE (or in the tree's defaults)."""
    kconf = kconfig.load_tree(_tree(args))
    if args.config is not None:
        kconfig.apply_base(kconf, str(args.config))
    print(kconfig.explain(kconf, args.symbol))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Print the symbols whose values differ between A and B."""
    print(kconfig.render_diff(kconfig.diff_configs(args.a, args.b), str(args.a), str(args.b)))
    return 0


def _short_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
