"""`harness bench` and `harness soak`: the pipeline's own figures (bench.json) and its flake rate (soak.json)."""

from __future__ import annotations

import argparse
import json
import sys

from harness.app.bench import BenchRequest, SoakRequest, bench, soak
from harness.cli import options
from harness.cli.output import progress_to_stderr

BENCH_EXITS = ((0, "the figures were measured (bench.json; printed on stdout)"),)
SOAK_EXITS = ((0, "no flake, and every injected fault classified as what it was"),
              (1, "a healthy run flaked, or an injected fault was misclassified"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "bench", "measure build, boot and SSH figures into bench.json", *BENCH_EXITS)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--loop", action="store_true",
                   help="also measure a maintainer's loop: edit one file of a user tree, then one event case's "
                        "verdict (edit_to_verdict_s), and the same change through harness compare "
                        "(harness/app/loop_bench.py; bench.json's \"loop\")")
    p.set_defaults(func=bench_main)

    p = options.add_parser(sub, "soak", "boot and run the smoke workloads N times; report flakes and their causes",
                           *SOAK_EXITS)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--fault-rate", type=float, default=0.0, metavar="P",
                   help="inject a fault (QEMU SIGKILL, guest panic, hung guest) into this share of the runs, at "
                        "random; each must be classified as such (default 0)")
    p.add_argument("--seed", type=int, default=None, help="the random draw of --fault-rate, to repeat a soak")
    p.set_defaults(func=soak_main)


def bench_main(args: argparse.Namespace) -> int:
    with progress_to_stderr():  # builds, the loop's runs: stdout is the figures' alone
        result = bench(BenchRequest(args.kernel_src, args.machine, args.results_dir, args.boots, args.loop,
                                    args.arch))
    print(json.dumps(result.figures, indent=2))
    print(f"bench.json: {result.path}", file=sys.stderr)
    return 0


def soak_main(args: argparse.Namespace) -> int:
    result = soak(SoakRequest(args.kernel_src, args.machine, args.results_dir, args.runs, args.fault_rate, args.seed,
                              args.arch))
    f = result.figures
    print(f"soak: {f['runs']} runs, {f['flakes']} flakes among {f['healthy_runs']} healthy runs; "
          f"{f['injected']} faults injected, {f['misclassified']} misclassified; {result.path}")
    return result.exit_code
