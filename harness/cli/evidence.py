"""`harness evidence`: what the event field of struct mmu_notifier_range saves a driver, measured.

Boots one guest on the notifier-on kernel and runs the evidence workloads (harness/checks/evidence.py)
against the probe's model driver in both modes and, where the kernel has CONFIG_TEST_HMM, against
lib/test_hmm.c's device; writes evidence.json, evidence.md and the plots under results/<run>/evidence/.
"""

from __future__ import annotations

import argparse

from harness.app.evidence import EvidenceRequest, evidence
from harness.checks.evidence import BY_NAME
from harness.cli import options

EXITS = ((0, "the report was written"), (1, "no workload gave a figure (every one was skipped)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = options.add_parser(sub, "evidence", "measure what the notifier event saves a model driver (report)",
                           *EXITS, description=__doc__)
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
    result = evidence(EvidenceRequest(args.kernel_src, args.machine, args.results_dir, args.repeats,
                                      tuple(args.only or ()), not args.no_hmm, args.rxe, args.arch))
    print(result.markdown)
    for s in result.skipped:
        print(f"skipped {s}")
    print(f"report: {result.out}")
    return result.exit_code
