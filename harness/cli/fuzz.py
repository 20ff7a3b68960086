"""`harness fuzz`: random programs of memory operations against every mirror, judged by the oracle; each
finding shrunk to a reproducer.

    harness fuzz [--kernel-src KSRC] [--time 10m] [--seed N] [--mirror model|hmm]... [--jobs N] [--resume]
                 [--max-programs N] [--stop-at-first [--stop-check CHECK]...] [--replay PROGRAM] [--machine M]
                 [--results-dir DIR] [--set SYM=VALUE]... [--kcov]
    harness fuzz [--base KSRC] [--base-patch FILE]... (--patch FILE|A..B ... | --patched KSRC) [--time 10m] ...

A program (guest/kprograms/fuzz_exec.c runs it) maps areas (anonymous, shared, memfd, ext2 file, THP) and
does what can happen to them: munmap, mprotect, mremap, madvise, fork with COW writes, soft-dirty,
compaction, KSM, migration, a thread racing on the other CPU, and test_hmm's device reading, writing,
migrating and taking pages exclusive. After every operation the device's view of every present page must
be the CPU's, each model mirror (mmu_probe) must still map what the process maps, and every start must
have had its end; on the host, every page an operation had to invalidate must have been, with the event
configs/fuzz.yaml names, and the kernel log must have no splat. A finding is shrunk (fewer operations,
smaller ranges) and written to findings/N-*/ in the results directory: the minimal program, a stand-alone
reproducer.c, a pytest case for suites/, and KCIDB issues in kcidb.json. Progress goes to stderr every 10 s.

A seed gives the same programs (with --jobs too) as long as the kernel behaves the same (docs/fuzz.md). The
corpus of a seed lives in the cache; --resume goes on from where the last run of that seed stopped.
--replay runs one program file (a finding's program.prog) once.

With --patch or --patched (and --base, as for `harness compare`), the same programs run on both kernels,
and each program whose verdict or events differ (twice in a row) is reported in fuzz-compare.txt.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from harness.app.fuzz import FuzzRequest, run_fuzz
from harness.cli import options
from harness.cli.output import progress_to_stderr
from harness.fuzz.oracle import CHECKS
from harness.fuzz.runner import MIRRORS

EXITS = ((0, "no finding (no program differed, with --patch/--patched)"),
         (1, "a finding (with --patch/--patched: a program whose verdict or events differ)"))


def duration(text: str) -> float:
    """600, 600s, 10m, 1h: seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 10m or 1h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "fuzz", "random programs of memory operations against the mirrors, judged by the "
                           "oracle; findings shrunk to reproducers", *EXITS, description=__doc__)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--time", type=duration, default=600.0, metavar="T", help="how long to fuzz (default 10m)")
    p.add_argument("--seed", default=None, metavar="N", help="the seed (default: a fresh one, printed)")
    p.add_argument("--mirror", action="append", choices=MIRRORS, default=None,
                   help="a mirror to check (repeatable; default: all)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="guests at once (default 1)")
    p.add_argument("--resume", action="store_true", help="go on with the seed's corpus from the cache")
    p.add_argument("--max-programs", type=int, default=None, metavar="N", help="stop after N programs")
    p.add_argument("--stop-at-first", action="store_true", help="stop at the first finding (once shrunk)")
    p.add_argument("--stop-check", action="append", default=[], choices=CHECKS, metavar="CHECK",
                   help="with --stop-at-first: stop at the first finding of this check only (repeatable; the "
                        "others are still recorded)")
    p.add_argument("--replay", type=Path, default=None, metavar="PROGRAM", help="run one program file, judged")
    p.add_argument("--set", action="append", default=[], metavar="SYM=VALUE",
                   help="one more config setting of the kernel(s) (e.g. CONFIG_KCOV=y)")
    p.add_argument("--kcov", action="store_true",
                   help="coverage feedback: keep programs that run new kernel code (needs --set CONFIG_KCOV=y "
                        "--set CONFIG_KCOV_INSTRUMENT_ALL=y)")
    p.add_argument("--base", default=None, metavar="KSRC", help="with --patch/--patched: the base tree")
    p.add_argument("--base-patch", action="append", default=[], metavar="FILE|A..B",
                   help="patches the base itself carries (repeatable)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--patch", action="append", default=[], metavar="FILE|A..B",
                       help="fuzz the base against the base plus this series (repeatable, in order)")
    which.add_argument("--patched", metavar="KSRC", help="fuzz the base against this tree")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    req = FuzzRequest(args.kernel_src, args.machine, args.time, args.seed, tuple(args.mirror or MIRRORS), args.jobs,
                      args.resume, args.results_dir, args.replay, args.max_programs, args.stop_at_first,
                      stop_checks=frozenset(args.stop_check),
                      settings=tuple(args.set), kcov=args.kcov,
                      base=args.base, base_patch=tuple(args.base_patch), patch=tuple(args.patch),
                      patched=args.patched, arch=args.arch)
    with progress_to_stderr():
        result = run_fuzz(req)
    for d in result.differences:
        print(d.render())
    for n, f in enumerate(result.found, 1):
        print(f"finding {n}: {f.finding.describe()}\n  {len(f.minimal)} operation(s), found after "
              f"{f.seconds_to_find:.0f} s")
    s = result.stats
    print(f"{s.programs} programs, {s.ops} operations; results: {result.out_dir}", file=sys.stderr)
    return result.exit_code
