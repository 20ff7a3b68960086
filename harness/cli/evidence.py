"""`harness evidence`: what the event field of struct mmu_notifier_range saves a driver, measured.

Boots one guest on the notifier-on kernel and runs the evidence workloads (harness/checks/evidence.py)
against the probe's model driver in both modes and, where the kernel has CONFIG_TEST_HMM, against
lib/test_hmm.c's device; writes evidence.json, evidence.md and the plots under results/<run>/evidence/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness import paths
from harness.checks.evidence import (
    BY_NAME,
    WORKLOADS,
    HmmUnavailable,
    collect,
    devices_of,
    prepare_hmm,
    write_report,
)
from harness.cli import options
from harness.cli.compare import CompareRequest, run_compare
from harness.errors import UserError
from harness.kernel.prepare import prepare
from harness.results import compare, rundir
from harness.vm import faults
from harness.vm.machine import VM, load_profile, probe_accel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evidence", help="measure what the notifier event saves a model driver (report)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_kernel(p, axis=False)
    options.add_machine(p)
    options.add_results_dir(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", action="append", choices=sorted(BY_NAME), help="run only these workloads")
    p.add_argument("--no-hmm", action="store_true",
                   help="do not run the workloads against lib/test_hmm.c's device too (default: where the kernel "
                        "has CONFIG_TEST_HMM)")
    p.add_argument("--rxe", action="store_true",
                   help="also soft-RoCE's on-demand paging, stock against event-aware (configs/patches/"
                        "rxe-odp-*.patch), measured by harness compare on this kernel (7.x: rxe has ODP since 6.15)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    out = rundir.new_run_dir(args.results_dir) / "evidence"
    prepared = prepare(args.kernel_src, "on")
    accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
    vm = VM(load_profile(args.machine), prepared.build.bzimage, prepared.image, out / "vm", accel=accel,
            extra_append=("harness.modules=mmu_probe",))
    workloads = [BY_NAME[n] for n in args.only] if args.only else WORKLOADS
    hmm_binary, hmm_skipped = None, "--no-hmm" if args.no_hmm else ""
    try:
        # Faults of the machine leave as one paragraph naming them (harness/vm/faults.py, exit status 2).
        with faults.guarded(vm, "booting the guest") as work:
            vm.start(boot_timeout=120)
            assert vm.ssh
            if not args.no_hmm:
                work.doing = "preparing test_hmm"
                try:
                    hmm_binary = prepare_hmm(vm.ssh, prepared.build)
                except HmmUnavailable as e:
                    hmm_skipped = str(e)
                    print(f"harness evidence: test_hmm will not run: {e}", file=sys.stderr)
            work.doing = "the evidence workloads ran"
            runs, skipped = collect(vm.ssh, workloads, args.repeats, hmm_binary=hmm_binary)
    finally:
        vm.stop()
    meta = {"date": time.strftime("%Y-%m-%d"), "release": prepared.build.release, "accel": accel,
            "repeats": args.repeats, "tree": prepared.tree.identity, "skipped": skipped,
            "hmm_skipped": hmm_skipped, "repo": str(paths.REPO)}
    devices = _rxe(args.kernel_src, out / "rxe-compare") if args.rxe else {}
    rows = write_report(out, runs, meta, devices)
    print((out / "evidence.md").read_text())
    for s in skipped:
        print(f"skipped {s}")
    print(f"report: {out}")
    return 0 if rows else 1


RXE_FIX = paths.CONFIGS / "patches" / "rxe-odp-copy-offset.patch"  # under both: reads are byte-exact
RXE_AWARE = paths.CONFIGS / "patches" / "rxe-odp-honour-event.patch"


def _rxe(kernel_src: str | None, results: Path) -> dict:
    """The rxe evidence workloads (suites/test_rxe.py test_evidence_reader) through harness compare: the kernel
    with rxe's copy fix, against the same plus the event-aware patch; their device counters."""
    comparison, out = run_compare(CompareRequest(base=kernel_src, base_patch=(str(RXE_FIX),), patch=(str(RXE_AWARE),),
                                                 suites=(str(paths.REPO / "suites/test_rxe.py"),),
                                                 k="test_evidence_reader", results_dir=results))
    print(compare.render_text(comparison), file=sys.stderr)
    if comparison.regressions or not comparison.devices:
        raise UserError(f"the rxe comparison did not give device counters without regressions: {out}/compare.txt")
    return devices_of(comparison.devices, "stock", "event-aware")
