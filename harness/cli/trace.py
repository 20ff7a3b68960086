"""`harness trace`: run a program in a guest and print the mmu_notifier events of its mm.

    harness trace [--kernel-src KSRC] [--machine PROFILE] [--json] [--timeout S] -- PROGRAM [ARGS...]

The program is copied into a freshly booted guest and started by guest/programs/trace-launch.c,
which subscribes the probe's classic notifier to the program's mm at its exec, before its first
instruction (the child stops at execve under PTRACE_TRACEME; the launcher subscribes and detaches).
Only that process is watched: a notifier is not inherited across fork.

PROGRAM is any x86-64 executable of this host: a statically linked one is copied alone; a dynamically
linked one gets its loader and shared libraries copied into the guest at the paths the host's loader
resolves them to (`ld.so --list`, as ldd does); one it cannot resolve is refused before booting.

Events are the notifier's invalidate_range_start calls, in order, and its release at exit, shown as
the kernel shows release to interval notifiers: RELEASE over [0, ULONG_MAX).
With --json, one document: {"exit_status": N, "stdout": "...", "events": [{"seq": N, "event": "UNMAP",
"start": N, "end": N, "flags": N}, ...]}. The program's stderr goes to stderr either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.app.trace import TraceRequest, trace
from harness.cli import options
from harness.cli.output import progress_to_stderr
from harness.observe.trace import render

EXITS = (("N", "the program's own exit status (128 + N when signal N killed it), as with strace; a fault of "
               "the guest (a crash, QEMU killed, a hang, the channel lost) is 2, with one paragraph naming it"),)


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "trace", "run a program (static, or dynamic with its libraries) in a guest and "
                           "print its mm's notifier events", *EXITS, description=__doc__)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=120, help="seconds the program may run (default 120)")
    p.add_argument("program", type=Path, metavar="PROGRAM",
                   help="an executable on this host (static, or dynamic with libraries this host resolves)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    argv = tuple(args.args[1:] if args.args[:1] == ["--"] else args.args)
    with progress_to_stderr():  # a build's progress, the KVM probe: stdout is the trace's (the --json document)
        result = trace(TraceRequest(args.program, argv, args.kernel_src, args.machine, args.timeout,
                                    args.arch))
    if result.stderr:
        sys.stderr.write(result.stderr)
    if args.json:
        print(json.dumps({"exit_status": result.exit_status, "stdout": result.stdout, "events": result.events}))
    else:
        print(f"# {args.program} {' '.join(argv)}: pid {result.pid} in a {result.release} guest, "
              f"probe subscribed at exec; console log: {result.console_log}")
        print(render(result.events, result.stdout, result.exit_status))
    return result.exit_status
