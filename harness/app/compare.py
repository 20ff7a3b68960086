"""The `compare` use case: a tree against the same tree plus a series, run in one sitting; what changed.

Both kernels are prepared once each, then every group (the suites, then one per driver profile) runs on
both, base first; the comparison and its reports (compare.txt, .md, .json) are in the results directory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from harness import paths
from harness.app.bisect import after_compare
from harness.app.driver import fragment_notes, require_arch
from harness.app.kernel import KernelChoice
from harness.app.run import RunRequest, run_on
from harness.atomic import check_output_dir, write_text
from harness.checks import drivers, expectations
from harness.errors import UserError
from harness.kernel import kconfig, patches, trees
from harness.kernel.arch import HOST
from harness.kernel.build import STAMP
from harness.kernel.prepare import Prepared, prepare
from harness.results import compare, junit, rundir

DEFAULT_SUITES = ("suites/test_events.py", "suites/test_migration.py", "suites/test_observers.py")


@dataclass(frozen=True)
class CompareRequest:
    base: str | None = None
    base_patch: tuple[str, ...] = ()
    patch: tuple[str, ...] = ()
    patched: str | None = None
    notifier: str = "on"
    fragments: tuple[str, ...] = ()
    machine: str = "default"
    drivers: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()
    expect_events: Path | None = None
    results_dir: Path | None = None
    k: str | None = None
    boot_timeout: float | None = None
    guest_modules: str = ""
    arch: str = HOST


@dataclass(frozen=True)
class CompareResult:
    comparison: compare.Comparison
    out_dir: Path  # compare.txt, compare.md, compare.json; base/ and patched/ hold every run

    @property
    def exit_code(self) -> int:
        """0 nothing changed, 1 a regression, 3 only notifier events changed."""
        return self.comparison.exit_code()

    @property
    def text(self) -> str:
        return compare.render_text(self.comparison)


def run_compare(req: CompareRequest) -> CompareResult:
    """Build both kernels, run the groups on both, compare; the report files are written in the results dir."""
    expected = compare.load_expected(req.expect_events) if req.expect_events else None
    patches.check_specs(list(req.base_patch), "--base-patch")  # an option-like value: refused before anything
    patches.check_specs(list(req.patch))
    check_output_dir(Path(req.results_dir or paths.results_root()))  # before anything is made; creates nothing
    sides_ = resolve_sides(req.base, req.base_patch, req.patch, req.patched)
    base_ksrc, base_tree, patched_ksrc, what, notes = (sides_.base_ksrc, sides_.base_tree, sides_.patched_ksrc,
                                                       sides_.what, sides_.notes)
    out_dir = rundir.new_run_dir(req.results_dir)  # claimed once both trees exist: a refused series leaves none
    sides = {"base": base_ksrc, "patched": patched_ksrc}
    built = {side: _prepare(side, ksrc, req.notifier, req.fragments, req.arch) for side, ksrc in sides.items()}
    groups = _groups(req, built["base"])
    runs: dict[str, list[Path]] = {"base": [], "patched": []}
    for n, (name, machine, suites) in enumerate(groups):
        for side, ksrc in sides.items():
            print(f"compare: {side}: {name} on machine {machine} ...", file=sys.stderr, flush=True)
            # timings.json's prepare figures are what a run spent on its kernel: the first group's run paid them
            kernel = built[side] if n == 0 else replace(built[side], timings=dict.fromkeys(built[side].timings, 0.0))
            result = run_on(RunRequest(KernelChoice(ksrc, req.notifier, req.fragments, req.arch), machine, suites,
                                       out_dir / side / name, req.k, req.boot_timeout, req.guest_modules,
                                       quiet=True), kernel)
            print(junit.run_summary(result.run_dir), file=sys.stderr, flush=True)
            runs[side].append(result.run_dir)
    base_label = f"{base_ksrc} ({built['base'].tree.identity}, {built['base'].build.release})"
    comparison = compare.compare(base_label, f"{what}: {patched_ksrc}", runs["base"], runs["patched"],
                                 expectations.load(base_tree.series), expected)
    comparison.notes = [*notes, f"{req.arch}, machine {req.machine}, notifier {req.notifier}; groups: "
                        + ", ".join(g[0] for g in groups)]
    comparison.builds = {side: _build_figures(p) for side, p in built.items()}
    if comparison.exit_code() != compare.EXIT_SAME:
        comparison.bisect = after_compare(trees.resolve(req.base).path, req.patch, groups,
                                          runs["patched"], comparison, req.notifier, req.fragments,
                                          req.arch)
    write_text(out_dir / "compare.txt", compare.render_text(comparison))
    write_text(out_dir / "compare.md", compare.render_markdown(comparison))
    write_text(out_dir / "compare.json", json.dumps(compare.to_json(comparison), indent=1))
    return CompareResult(comparison, out_dir)


@dataclass(frozen=True)
class Sides:
    """The two kernels of a comparison: the base (with its --base-patch series) and the patched one."""
    base_ksrc: str
    base_tree: trees.KernelTree
    patched_ksrc: str
    what: str  # how the patched side came about, for the report
    notes: list[str]


def resolve_sides(base: str | None, base_patch: tuple[str, ...], patch: tuple[str, ...],
                  patched: str | None) -> Sides:
    """--base, --base-patch, and --patch or --patched, as trees of the cache that cannot change while compared
    (shared by `harness compare` and `harness fuzz --patch`)."""
    notes: list[str] = []
    base_ksrc, base_tree = patches.fixed_base(base)
    if base_tree.identity != (given := trees.resolve(base)).identity:
        notes.append(f"note: {given.path} is compared at its HEAD ({base_tree.identity}); uncommitted "
                     "changes are not part of it")
    if base_patch:
        under = patches.read_series(list(base_patch), given, "--base-patch")
        base_ksrc, base_tree = patches.patched_tree(base_tree, base_ksrc, under)
        notes += [f"  base patch {i}/{len(under)}: {p.origin}: {p.subject}" for i, p in enumerate(under, 1)]
    if patch:
        series = patches.read_series(list(patch), given)
        patched_ksrc, _ = patches.patched_tree(base_tree, base_ksrc, series)
        what = f"{base_ksrc} + {len(series)} patch(es)"
        notes += [f"  patch {i}/{len(series)}: {p.origin}: {p.subject}" for i, p in enumerate(series, 1)]
    elif patched:
        patched_ksrc, patched_tree = patches.fixed_base(patched)
        what = f"{patched} ({patched_tree.identity})"
    else:
        raise UserError("compare needs --patch or --patched")
    return Sides(base_ksrc, base_tree, patched_ksrc, what, notes)


def _prepare(side: str, ksrc: str, notifier: str, fragments: tuple[str, ...], arch: str) -> Prepared:
    try:
        return prepare(ksrc, notifier, fragments=fragments, arch=arch)
    except UserError as e:
        raise UserError(f"the {side} kernel ({ksrc}) did not build: {e}") from None


def _groups(req: CompareRequest, base: Prepared) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, machine, suites) of each run: the suites first, then one per driver profile."""
    groups = [("suites", req.machine, req.suites or tuple(str(paths.REPO / s) for s in DEFAULT_SUITES))]
    names = req.drivers or (() if req.suites else tuple(drivers.known_drivers()))
    config = kconfig.read_config_values(base.build.config)
    for name in names:
        profile = drivers.load_driver(name)
        if req.arch not in profile.arches and not req.drivers:
            continue  # a profile not proven on this architecture is left out, unless asked for by name
        require_arch(profile, req.arch)
        if not req.drivers and fragment_notes(profile, req.notifier, base.tree.series, config):
            continue  # this config cannot run it: the driver's own command says why
        groups.append((f"driver-{name}", profile.machine, tuple(str(paths.REPO / s) for s in profile.suites)))
    return groups


def _build_figures(prepared: Prepared) -> dict[str, object]:
    """How long this command spent on the kernel and, if it built it now, the build's own figures."""
    # and each stage's: source_s (for a patched tree, its copy), config_s, kernel_s, image_s
    figures: dict[str, object] = {"prepare_s": round(sum(prepared.timings.values()), 1), **prepared.timings}
    stamp = json.loads((prepared.build.dir / STAMP).read_text())
    if prepared.timings.get("kernel_s", 0) >= 1:  # built (or rebuilt) by this command
        ccache = stamp.get("ccache", {})
        hits, misses = int(ccache.get("hits", 0)), int(ccache.get("misses", 0))
        figures |= {"build_s": stamp.get("build_s"), "ccache_hits": hits, "ccache_misses": misses,
                    "seeded_from_base": stamp.get("seeded", False)}
        if hits + misses:
            figures["ccache_hit_rate"] = f"{100 * hits / (hits + misses):.0f}%"
    else:
        figures["cached"] = True
    return figures
