"""The `bench` and `soak` use cases: the pipeline's own figures (bench.json) and its flake rate (soak.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.app.loop_bench import run_loop
from harness.errors import UserError
from harness.kernel.arch import HOST
from harness.results import rundir
from harness.vm.bench import run_bench, run_soak


@dataclass(frozen=True)
class BenchRequest:
    kernel_src: str | None = None
    machine: str = "default"
    results_dir: Path | None = None
    boots: int = 3
    loop: bool = False  # also a maintainer's edit-to-verdict loop (harness/app/loop_bench.py)
    arch: str = HOST


@dataclass(frozen=True)
class BenchResult:
    figures: dict[str, Any]
    path: Path  # bench.json


def bench(req: BenchRequest) -> BenchResult:
    if req.loop and req.arch != HOST:
        raise UserError(f"bench --loop measures the loop on {HOST}, not on {req.arch}")
    out = rundir.new_run_dir(req.results_dir)
    figures = run_bench(out, req.kernel_src, req.machine, boots=req.boots, arch=req.arch)
    if req.loop:
        figures["loop"] = run_loop(out / "loop", req.machine)
        (out / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    return BenchResult(figures, out / "bench.json")


@dataclass(frozen=True)
class SoakRequest:
    kernel_src: str | None = None
    machine: str = "default"
    results_dir: Path | None = None
    runs: int = 50
    fault_rate: float = 0.0  # the share of runs with an injected fault, each of which must be classified
    seed: int | None = None
    arch: str = HOST


@dataclass(frozen=True)
class SoakResult:
    figures: dict[str, Any]
    path: Path  # soak.json

    @property
    def exit_code(self) -> int:
        return 1 if self.figures["flakes"] or self.figures["misclassified"] else 0


def soak(req: SoakRequest) -> SoakResult:
    out = rundir.new_run_dir(req.results_dir)
    figures = run_soak(out, req.kernel_src, req.runs, req.machine, fault_rate=req.fault_rate, seed=req.seed,
                       arch=req.arch)
    return SoakResult(figures, out / "soak.json")
