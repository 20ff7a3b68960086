"""`harness bench` and `harness soak`: the pipeline's own figures (bench.json) and its flake rate (soak.json)."""

from __future__ import annotations

import argparse
import json
import sys

from harness.cli import options
from harness.cli.output import progress_to_stderr
from harness.results import rundir
from harness.vm.bench import run_bench, run_soak
from harness.vm.loop_bench import run_loop


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure build, boot and SSH figures into bench.json")
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--loop", action="store_true",
                   help="also measure a maintainer's loop: edit one file of a user tree, then one event case's "
                        "verdict (edit_to_verdict_s), and the same change through harness compare "
                        "(harness/vm/loop_bench.py; bench.json's \"loop\")")
    p.set_defaults(func=bench)

    p = sub.add_parser("soak", help="boot and run the smoke workloads N times; report flakes and their causes")
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--fault-rate", type=float, default=0.0, metavar="P",
                   help="inject a fault (QEMU SIGKILL, guest panic, hung guest) into this share of the runs, at "
                        "random; each must be classified as such (default 0)")
    p.add_argument("--seed", type=int, default=None, help="the random draw of --fault-rate, to repeat a soak")
    p.set_defaults(func=soak)


def bench(args: argparse.Namespace) -> int:
    out = rundir.new_run_dir(args.results_dir)
    with progress_to_stderr():  # builds, the loop's runs: stdout is the figures' alone
        figures = run_bench(out, args.kernel_src, args.machine, boots=args.boots)
        if args.loop:
            figures["loop"] = run_loop(out / "loop", args.machine)
            (out / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"bench.json: {out / 'bench.json'}", file=sys.stderr)
    return 0


def soak(args: argparse.Namespace) -> int:
    out = rundir.new_run_dir(args.results_dir)
    figures = run_soak(out, args.kernel_src, args.runs, args.machine, fault_rate=args.fault_rate, seed=args.seed)
    print(f"soak: {figures['runs']} runs, {figures['flakes']} flakes among {figures['healthy_runs']} healthy runs; "
          f"{figures['injected']} faults injected, {figures['misclassified']} misclassified; {out / 'soak.json'}")
    return 1 if figures["flakes"] or figures["misclassified"] else 0
