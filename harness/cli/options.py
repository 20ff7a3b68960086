"""Options that several commands share, declared once, and the typed values they parse into."""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from harness.app.kernel import KernelChoice
from harness.errors import EXIT_INFRA, EXIT_INTERRUPTED, EXIT_USER
from harness.kernel.arch import HOST, known_arches
from harness.kernel.config import NOTIFIER_AXIS


def kernel_choice(args: argparse.Namespace) -> KernelChoice:
    """The kernel that --kernel-src, --notifier and --fragment chose."""
    return KernelChoice(args.kernel_src, getattr(args, "notifier", "on"), tuple(getattr(args, "fragment", ())),
                        args.arch)


def add_kernel(p: argparse.ArgumentParser, *, axis: bool = True) -> None:
    """--kernel-src and --arch, and with `axis` the two things that pick a configuration of it: --notifier,
    --fragment."""
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None, metavar="KSRC",
                   help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    add_arch(p)
    if axis:
        p.add_argument("--notifier", default="on", choices=NOTIFIER_AXIS, help="the CONFIG_MMU_NOTIFIER axis")
        p.add_argument("--fragment", action="append", default=[], metavar="NAME",
                       help="an extra config fragment: configs/fragments/NAME.config (e.g. debug/kasan) or a path")


def add_arch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=HOST, choices=known_arches(),
                   help=f"the guest's architecture (configs/arches/; default {HOST}): another one is cross-built "
                        "and booted under TCG, on its own machine profiles (configs/machines/ARCH/)")


def add_machine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--machine", default=os.environ.get("MACHINE", "default"), metavar="PROFILE",
                   help="configs/machines/PROFILE.yaml, or the path of a profile (env MACHINE)")


def add_results_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=None, metavar="DIR",
                   help="where this run's results go (default: results/<time>)")


def add_run_tuning(p: argparse.ArgumentParser) -> None:
    """What `run` and `driver` both pass on to the suites."""
    p.add_argument("-k", default=None, metavar="EXPR", help="pytest -k expression")
    p.add_argument("--boot-timeout", type=float, default=None, metavar="S",
                   help="seconds from QEMU start to the ready marker")
    p.add_argument("--guest-modules", default="", metavar="M,...",
                   help="extra guest modules to load at boot (fault_panic, fault_inject, ...)")


# What `run` and `driver` exit with: pytest's statuses, as the run use case gives them back (harness/app/run.py)
RUN_EXITS = ((0, "every test passed (or skipped, or failed as expected)"),
             (1, "a test did not pass: its outcome (FAIL, CRASH, TIMEOUT, INFRA, ...) is in outcomes.json"),
             (3, "pytest's internal error (results could not be written: a full disk)"),
             (4, "pytest's usage error (an unknown option or suite)"),
             (5, "no tests were collected (a -k that matches nothing)"))

# Every command's exit statuses end with these (harness/errors.py); each command's own come first.
COMMON_EXITS = ((EXIT_USER, "bad input (a UserError), or a fault of a guest this command booted itself"),
                (EXIT_INFRA, "infrastructure: apt, the network, a missing QEMU or tool, a full disk (retry or "
                             "fix the machine; the input was fine)"),
                (EXIT_INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"))


def exit_codes(*own: tuple[int | str, str]) -> str:
    """The `--help` epilog that lists a command's exit statuses, in order: its own and COMMON_EXITS."""
    rows = sorted([*own, *COMMON_EXITS], key=lambda row: (isinstance(row[0], int), row[0] if isinstance(row[0], int)
                                                          else 0))
    return "exit status:\n" + "\n".join(
        textwrap.fill(text, 100, initial_indent=f"  {code!s:>4}  ", subsequent_indent=" " * 8) for code, text in rows)


def add_parser(sub: argparse._SubParsersAction, name: str, help: str, *exits: tuple[int | str, str],
               description: str | None = None) -> argparse.ArgumentParser:
    """A command's parser, with its exit statuses in its --help; `description` keeps its line breaks."""
    return sub.add_parser(name, help=help, description=description or help, epilog=exit_codes(*exits),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
