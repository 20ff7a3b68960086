"""Options that several commands share, declared once, and the typed values they parse into."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from harness.kernel.config import NOTIFIER_AXIS


@dataclass(frozen=True)
class KernelChoice:
    """Which kernel a command runs on: a tree (None: Debian's default), the notifier axis, extra fragments."""

    kernel_src: str | None = None
    notifier: str = "on"
    fragments: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> KernelChoice:
        return cls(args.kernel_src, getattr(args, "notifier", "on"), tuple(getattr(args, "fragment", ())))


def add_kernel(p: argparse.ArgumentParser, *, axis: bool = True) -> None:
    """--kernel-src, and with `axis` the two things that pick a configuration of it: --notifier, --fragment."""
    p.add_argument("--kernel-src", default=os.environ.get("KSRC") or None, metavar="KSRC",
                   help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    if axis:
        p.add_argument("--notifier", default="on", choices=NOTIFIER_AXIS, help="the CONFIG_MMU_NOTIFIER axis")
        p.add_argument("--fragment", action="append", default=[], metavar="NAME",
                       help="an extra config fragment: configs/fragments/NAME.config (e.g. debug/kasan) or a path")


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
