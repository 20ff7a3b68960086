"""The `evidence` use case: what the event field of struct mmu_notifier_range saves a driver, measured.

Boots one guest on the notifier-on kernel and runs the evidence workloads (harness/checks/evidence.py)
against the probe's model driver in both modes and, where the kernel has CONFIG_TEST_HMM, against
lib/test_hmm.c's device; with `rxe`, also soft-RoCE stock against event-aware, through the compare use case.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.app.compare import CompareRequest, run_compare
from harness.checks.evidence import BY_NAME, WORKLOADS, HmmUnavailable, collect, devices_of, prepare_hmm, write_report
from harness.errors import UserError
from harness.kernel.arch import HOST
from harness.kernel.prepare import prepare
from harness.results import rundir
from harness.vm import faults
from harness.vm.machine import accel_for, guest_vm, load_profile

RXE_FIX = paths.CONFIGS / "patches" / "rxe-odp-copy-offset.patch"  # under both: reads are byte-exact
RXE_AWARE = paths.CONFIGS / "patches" / "rxe-odp-honour-event.patch"


@dataclass(frozen=True)
class EvidenceRequest:
    kernel_src: str | None = None
    machine: str = "default"
    results_dir: Path | None = None
    repeats: int = 3
    only: tuple[str, ...] = ()  # workload names; none: all
    hmm: bool = True  # also against lib/test_hmm.c's device, where the kernel has it
    rxe: bool = False
    arch: str = HOST


@dataclass(frozen=True)
class EvidenceResult:
    out: Path  # evidence.json, evidence.md, the plots
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (self.out / "evidence.md").read_text()

    @property
    def exit_code(self) -> int:
        return 0 if self.rows else 1


def evidence(req: EvidenceRequest) -> EvidenceResult:
    out = rundir.new_run_dir(req.results_dir) / "evidence"
    if req.rxe and req.arch != HOST:
        raise UserError(f"evidence --rxe: soft-RoCE runs on {HOST} guests only (no rdma-core in {req.arch} images)")
    prepared = prepare(req.kernel_src, "on", arch=req.arch)
    accel = accel_for(prepared)
    vm = guest_vm(prepared, load_profile(req.machine, prepared.build.arch.name), out / "vm", accel, ("mmu_probe",))
    workloads = [BY_NAME[n] for n in req.only] if req.only else WORKLOADS
    hmm_binary, hmm_skipped = None, "" if req.hmm else "--no-hmm"
    try:
        # Faults of the machine leave as one paragraph naming them (harness/vm/faults.py, exit status 2).
        with faults.guarded(vm, "booting the guest") as work:
            vm.start(boot_timeout=120)
            assert vm.ssh
            if req.hmm:
                work.doing = "preparing test_hmm"
                try:
                    hmm_binary = prepare_hmm(vm.ssh, prepared.build)
                except HmmUnavailable as e:
                    hmm_skipped = str(e)
                    print(f"harness evidence: test_hmm will not run: {e}", file=sys.stderr)
            work.doing = "the evidence workloads ran"
            runs, skipped = collect(vm.ssh, workloads, req.repeats, hmm_binary=hmm_binary)
    finally:
        vm.stop()
    meta = {"date": time.strftime("%Y-%m-%d"), "release": prepared.build.release, "accel": accel,
            "repeats": req.repeats, "tree": prepared.tree.identity, "skipped": skipped,
            "hmm_skipped": hmm_skipped, "repo": str(paths.REPO)}
    devices = _rxe(req.kernel_src, out / "rxe-compare") if req.rxe else {}
    return EvidenceResult(out, write_report(out, runs, meta, devices), list(skipped))


def _rxe(kernel_src: str | None, results: Path) -> dict:
    """The rxe evidence workloads (suites/test_rxe.py test_evidence_reader) through the compare use case: the
    kernel with rxe's copy fix, against the same plus the event-aware patch; their device counters."""
    result = run_compare(CompareRequest(base=kernel_src, base_patch=(str(RXE_FIX),), patch=(str(RXE_AWARE),),
                                        suites=(str(paths.REPO / "suites/test_rxe.py"),),
                                        k="test_evidence_reader", results_dir=results))
    print(result.text, file=sys.stderr)
    comparison = result.comparison
    if comparison.regressions or not comparison.devices:
        raise UserError(f"the rxe comparison did not give device counters without regressions: "
                        f"{result.out_dir}/compare.txt")
    return devices_of(comparison.devices, "stock", "event-aware")
