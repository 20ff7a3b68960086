"""The `fuzz` use case: random programs of memory operations against the kernel's mirrors, judged by the
oracle, each finding shrunk and written out (harness/fuzz/); or, with compare's inputs, the same programs
on a base and a patched kernel, reporting each program whose verdict or events differ.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.app.compare import resolve_sides
from harness.atomic import check_output_dir, write_text
from harness.errors import UserError
from harness.fuzz import report
from harness.fuzz.campaign import Campaign, Corpus, Found, Stats
from harness.fuzz.difference import Difference, differ
from harness.fuzz.program import FuzzConfig, Generator, Program, load_config, parse
from harness.fuzz.runner import MIRRORS, FuzzGuest
from harness.kernel.arch import HOST
from harness.kernel.prepare import Prepared, prepare
from harness.results import rundir
from harness.vm.machine import accel_for

MAX_JOBS = 4  # guests at once: each takes 2 vCPU threads and 1 GiB, on a 2-core machine


@dataclass(frozen=True)
class FuzzRequest:
    kernel_src: str | None = None
    machine: str = "default"
    seconds: float = 600
    seed: str | None = None  # None: a fresh one, printed
    mirrors: tuple[str, ...] = MIRRORS
    jobs: int = 1
    resume: bool = False
    results_dir: Path | None = None
    replay: Path | None = None  # run this program file once, judged, and stop
    max_programs: int | None = None
    stop_at_first: bool = False
    stop_checks: frozenset[str] = frozenset()  # with stop_at_first: only a finding of one of these stops
    shrink_budget: int = 150
    settings: tuple[str, ...] = ()  # --set SYM=VALUE on the kernel's config (CONFIG_KCOV=y for --kcov)
    kcov: bool = False  # coverage feedback from the worker's kernel PCs
    # before a merge: compare's inputs
    base: str | None = None
    base_patch: tuple[str, ...] = ()
    patch: tuple[str, ...] = ()
    patched: str | None = None
    arch: str = HOST


@dataclass
class FuzzResult:
    out_dir: Path
    seed: str
    stats: Stats
    found: list[Found] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.found or self.differences else 0


def check_request(req: FuzzRequest) -> None:
    if not 1 <= req.jobs <= MAX_JOBS:
        raise UserError(f"--jobs {req.jobs}: between 1 and {MAX_JOBS} guests at once")
    if unknown := [m for m in req.mirrors if m not in MIRRORS]:
        raise UserError(f"--mirror {unknown[0]}: the mirrors are {', '.join(MIRRORS)}")
    if req.seconds <= 0:
        raise UserError("--time must be more than 0")
    if req.seed is not None and not req.seed.isalnum():
        raise UserError(f"--seed {req.seed!r}: letters and digits only")
    if (req.patch or req.patched or req.base_patch or req.base) and req.kernel_src:
        raise UserError("--kernel-src fuzzes one kernel; --base with --patch/--patched compares two: not both")
    if (req.base or req.base_patch) and not (req.patch or req.patched):
        raise UserError("--base needs --patch or --patched: the kernel to compare it with")


PROGRAM_MAX_BYTES = 1 << 20  # a program of 80 operations is 2 KiB


def read_program(path: Path) -> Program:
    if not path.is_file():
        raise UserError(f"--replay {path}: no such file")
    with open(path, "rb") as f:
        data = f.read(PROGRAM_MAX_BYTES + 1)
    if len(data) > PROGRAM_MAX_BYTES:
        raise UserError(f"--replay {path}: more than {PROGRAM_MAX_BYTES} bytes: not a program")
    return parse(data.decode(errors="replace"), str(path))


def run_fuzz(req: FuzzRequest) -> FuzzResult:
    check_request(req)
    config = load_config()
    program = read_program(req.replay) if req.replay else None  # refused before any build
    check_output_dir(Path(req.results_dir or paths.results_root()))  # before anything is built; creates nothing
    seed = req.seed or str(secrets.randbelow(10**9))
    print(f"fuzz: seed {seed}", file=sys.stderr, flush=True)
    if req.patch or req.patched:
        return _compare(req, config, seed)
    prepared = _prepare(req.kernel_src, req.settings, req.arch)
    out_dir = rundir.new_run_dir(req.results_dir)
    guests = [FuzzGuest(prepared, req.machine, out_dir / f"job-{j}", accel_for(prepared), req.mirrors, config,
                        kcov=req.kcov) for j in range(1 if program else req.jobs)]
    try:
        if program is not None:
            run = guests[0].run(program)
            write_text(out_dir / "replay.json", json.dumps(run.outcome.to_json(), indent=1))
            stats = Stats(programs=1, ops=len(program), run_s=run.seconds)
            found = [Found(run.outcome.finding, seed, 0, program, program, run.outcome, 0, run.seconds)] \
                if run.outcome.finding else []
            return _finish(FuzzResult(out_dir, seed, stats, found), prepared, req)
        guests[0].run(())  # boots, and tells what the guest has
        generator = Generator(config, guests[0].features)
        result = FuzzResult(out_dir, seed, Stats())
        campaign = Campaign(guests, generator, Corpus.open(seed, req.resume), seed,
                            lambda f: _record(result, f, prepared), req.shrink_budget)
        result.stats = campaign.run(req.seconds, req.max_programs, req.stop_at_first, req.stop_checks)
        print(campaign.progress(), file=sys.stderr, flush=True)
        return _finish(result, prepared, req)
    finally:
        for g in guests:
            g.stop()


def _record(result: FuzzResult, found: Found, prepared: Prepared) -> None:
    result.found.append(found)
    where = report.write_finding(result.out_dir, len(result.found), found, prepared)
    print(f"fuzz: finding {len(result.found)}: {found.finding.describe()}\n  minimal program "
          f"({len(found.minimal)} operation(s)): {where / 'program.prog'}", file=sys.stderr, flush=True)


def _finish(result: FuzzResult, prepared: Prepared, req: FuzzRequest) -> FuzzResult:
    s = result.stats
    write_text(result.out_dir / "fuzz.json", json.dumps({
        "seed": result.seed, "kernel": prepared.build.release, "identity": prepared.tree.identity,
        "mirrors": list(req.mirrors), "jobs": req.jobs, "programs": s.programs, "ops": s.ops,
        "run_s": round(s.run_s, 1), "behaviours": s.behaviours, "corpus": s.corpus, "boots": s.boots,
        "known": s.known,
        "findings": [{**f.finding.to_json(), "seconds_to_find": round(f.seconds_to_find, 1),
                      "ops_after_shrinking": len(f.minimal)} for f in result.found],
    }, indent=1))
    write_text(result.out_dir / "kcidb.json", json.dumps(report.kcidb(result.found, prepared, result.out_dir),
                                                         indent=1))
    return result


def _prepare(ksrc: str | None, settings: tuple[str, ...] = (), arch: str = HOST) -> Prepared:
    prepared = prepare(ksrc, "on", settings, arch=arch)
    if not prepared.build.has("MMU_NOTIFIER"):
        raise UserError(f"fuzz: the kernel {prepared.build.config} has no CONFIG_MMU_NOTIFIER: nothing mirrors")
    return prepared


def _compare(req: FuzzRequest, config: FuzzConfig, seed: str) -> FuzzResult:
    sides = resolve_sides(req.base, req.base_patch, req.patch, req.patched)
    built = {side: _prepare(ksrc, req.settings, req.arch)
             for side, ksrc in (("base", sides.base_ksrc), ("patched", sides.patched_ksrc))}
    out_dir = rundir.new_run_dir(req.results_dir)
    guests = {side: FuzzGuest(p, req.machine, out_dir / side, accel_for(p), req.mirrors, config)
              for side, p in built.items()}
    try:
        for g in guests.values():
            g.run(())
        features = guests["base"].features
        if features != guests["patched"].features:
            raise UserError(f"the two kernels' guests differ in what they can run: base {features}, patched "
                            f"{guests['patched'].features}")
        differences, stats = differ(guests["base"], guests["patched"], Generator(config, features), seed,
                                    req.seconds, req.max_programs, req.stop_at_first)
    finally:
        for g in guests.values():
            g.stop()
    result = FuzzResult(out_dir, seed, stats, differences=differences)
    text = "\n".join([f"harness fuzz: {sides.base_ksrc} against {sides.what}: {sides.patched_ksrc}", *sides.notes,
                      f"seed {seed}: {stats.programs} programs on both kernels", "",
                      *((d.render() for d in differences) if differences else ["no program differed"])])
    write_text(out_dir / "fuzz-compare.txt", text + "\n")
    write_text(out_dir / "fuzz-compare.json", json.dumps({
        "seed": seed, "base": sides.base_ksrc, "patched": sides.patched_ksrc, "programs": stats.programs,
        "differences": [d.to_json() for d in differences]}, indent=1))
    return result
