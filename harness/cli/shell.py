"""`harness shell`: boot a guest and open an interactive SSH shell in it (host key pinned, never accepted blindly),
or, with -c CMD, run one command and exit with its status."""

from __future__ import annotations

import argparse
import sys

from harness.app.shell import ShellRequest, shell
from harness.cli import options

EXITS = (("N", "the shell's, or with -c the command's own exit status (128 + N when signal N killed it); "
               "255: ssh lost the connection"),)


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "shell", "boot a guest and open a shell in it over SSH (or run one command: -c)",
                           *EXITS, description=__doc__)
    options.add_kernel(p)
    options.add_machine(p)
    p.add_argument("-c", dest="command", metavar="CMD",
                   help="run CMD with the guest's sh, print its output, exit with its status (no terminal)")
    p.add_argument("--timeout", type=float, default=300, help="seconds CMD may run (with -c; default 300)")
    p.add_argument("--gdb", action="store_true",
                   help="start QEMU's gdb stub on a unix socket in a private directory and print the gdb command "
                        "that attaches (lx- commands with --fragment debug/dump)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = shell(ShellRequest(options.kernel_choice(args), args.machine, args.command, args.timeout, args.gdb))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_status
