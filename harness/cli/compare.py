"""`harness compare`: a tree against the same tree plus a patch series; what the series changes.

    harness compare [--base KSRC] [--base-patch FILE]... (--patch FILE|A..B ... | --patched KSRC) [--notifier on|off]
                    [--fragment NAME]... [--machine M] [--driver NAME]... [--expect-events FILE]
                    [--results-dir DIR] [-k EXPR] [--boot-timeout S] [SUITES...]

--base defaults to Debian's 6.12; a git tree is compared at its HEAD (a snapshot in the cache).
--patch takes `git format-patch` files, an mbox of a series (`git format-patch --stdout`, `b4 am`'s .mbx;
a cover letter is skipped), or A..B of a git base, applied in order, as bytes, to a copy of the base; a
series naming any path outside the tree is refused whole before anything is touched. The patched kernel
is built on a copy of the base's build, so an unchanged file costs nothing. --patched takes a second tree
instead. --base-patch puts patches under the series, in the base (a fix the series builds on): both
kernels carry them.

Both kernels run the same suites in one sitting, one after the other, group by group: by default the
event, migration and observer suites and every driver profile the base's config supports; with
SUITES, those suites and the --driver profiles named. The report is plain text on stdout (for a mail
to the list); compare.txt, compare.md and compare.json are in the results directory, with every run
of both kernels under base/ and patched/.

Exit status: 0 nothing changed; 1 a regression (a test that now fails, a new kernel splat, a
completeness check that fails, an event change that --expect-events does not allow, or an intended
change that did not happen); 3 only notifier events changed (the report shows which); 2 bad input.

--expect-events FILE (YAML) states the event changes the series intends:
    changes:
      - {case: "mprotect/*", from: PROTECTION_VMA, to: CLEAR}
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.atomic import check_output_dir, write_text
from harness.checks import drivers, expectations
from harness.cli import options
from harness.cli.driver import fragment_notes
from harness.cli.options import KernelChoice
from harness.cli.output import progress_to_stderr
from harness.cli.run import RunRequest, run
from harness.errors import UserError
from harness.kernel import kconfig, patches, trees
from harness.kernel.build import STAMP
from harness.kernel.prepare import Prepared, prepare
from harness.results import compare, junit, rundir

DEFAULT_SUITES = ("suites/test_events.py", "suites/test_migration.py", "suites/test_observers.py")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="a tree against the same tree plus a series: what changed (exit 0/1/3)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=None, metavar="KSRC", help="the base tree (default: Debian's 6.12)")
    p.add_argument("--base-patch", action="append", default=[], metavar="FILE|A..B",
                   help="patches the base itself carries, under the series (a fix the series needs; repeatable)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--patch", action="append", default=[], metavar="FILE|A..B",
                       help="a patch, an mbox of a series, or a commit range of a git base (repeatable, in order)")
    which.add_argument("--patched", metavar="KSRC", help="a second tree to compare against the base")
    p.add_argument("--notifier", default="on", choices=("on", "off"), help="the CONFIG_MMU_NOTIFIER axis")
    p.add_argument("--fragment", action="append", default=[], metavar="NAME", help="an extra config fragment")
    options.add_machine(p)
    p.add_argument("--driver", action="append", default=[], metavar="NAME",
                   help="a configs/drivers profile to run on both (repeatable; default with no SUITES: all "
                        "the config supports)")
    p.add_argument("--expect-events", type=Path, metavar="FILE", help="the event changes the series intends")
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("suites", nargs="*", help=f"suites to run on both (default: {' '.join(DEFAULT_SUITES)})")
    p.set_defaults(func=main)


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


def main(args: argparse.Namespace) -> int:
    with progress_to_stderr():  # builds, snapshots, pytest: stdout is the report's (for a mail) alone
        comparison, out_dir = run_compare(CompareRequest(
            args.base, tuple(args.base_patch), tuple(args.patch), args.patched, args.notifier, tuple(args.fragment),
            args.machine, tuple(args.driver), tuple(args.suites), args.expect_events, args.results_dir, args.k,
            args.boot_timeout, args.guest_modules))
    print(compare.render_text(comparison), end="")
    print(f"results: {out_dir}", file=sys.stderr)
    return comparison.exit_code()


def run_compare(req: CompareRequest) -> tuple[compare.Comparison, Path]:
    """Build both kernels, run the groups on both, compare; the report files are written in the results dir."""
    expected = compare.load_expected(req.expect_events) if req.expect_events else None
    patches.check_specs(list(req.base_patch), "--base-patch")  # an option-like value: refused before anything
    patches.check_specs(list(req.patch))
    check_output_dir(Path(req.results_dir or paths.results_root()))  # before anything is made; creates nothing
    notes: list[str] = []
    base_ksrc, base_tree = patches.fixed_base(req.base)
    if base_tree.identity != (given := trees.resolve(req.base)).identity:
        notes.append(f"note: {given.path} is compared at its HEAD ({base_tree.identity}); uncommitted "
                     "changes are not part of it")
    if req.base_patch:
        under = patches.read_series(list(req.base_patch), given, "--base-patch")
        base_ksrc, base_tree = patches.patched_tree(base_tree, base_ksrc, under)
        notes += [f"  base patch {i}/{len(under)}: {p.origin}: {p.subject}" for i, p in enumerate(under, 1)]
    if req.patch:
        series = patches.read_series(list(req.patch), given)
        patched_ksrc, patched_tree = patches.patched_tree(base_tree, base_ksrc, series)
        what = f"{base_ksrc} + {len(series)} patch(es)"
        notes += [f"  patch {i}/{len(series)}: {p.origin}: {p.subject}" for i, p in enumerate(series, 1)]
    elif req.patched:
        patched_ksrc, patched_tree = patches.fixed_base(req.patched)
        what = f"{req.patched} ({patched_tree.identity})"
    else:
        raise UserError("compare needs --patch or --patched")
    out_dir = rundir.new_run_dir(req.results_dir)  # claimed once both trees exist: a refused series leaves none
    built = {side: _prepare(side, ksrc, req.notifier, req.fragments)
             for side, ksrc in (("base", base_ksrc), ("patched", patched_ksrc))}
    groups = _groups(req, built["base"])
    runs: dict[str, list[Path]] = {"base": [], "patched": []}
    for name, machine, suites in groups:
        for side, ksrc in (("base", base_ksrc), ("patched", patched_ksrc)):
            print(f"compare: {side}: {name} on machine {machine} ...", file=sys.stderr, flush=True)
            result = run(RunRequest(KernelChoice(ksrc, req.notifier, req.fragments), machine, suites,
                                    out_dir / side / name, req.k, req.boot_timeout, req.guest_modules, quiet=True))
            print(junit.run_summary(result.run_dir), file=sys.stderr, flush=True)
            runs[side].append(result.run_dir)
    base_label = f"{base_ksrc} ({built['base'].tree.identity}, {built['base'].build.release})"
    comparison = compare.compare(base_label, f"{what}: {patched_ksrc}", runs["base"], runs["patched"],
                                 expectations.load(base_tree.series), expected)
    comparison.notes = [*notes, f"machine {req.machine}, notifier {req.notifier}; groups: "
                        + ", ".join(g[0] for g in groups)]
    comparison.builds = {side: _build_figures(p) for side, p in built.items()}
    write_text(out_dir / "compare.txt", compare.render_text(comparison))
    write_text(out_dir / "compare.md", compare.render_markdown(comparison))
    write_text(out_dir / "compare.json", json.dumps(compare.to_json(comparison), indent=1))
    return comparison, out_dir


def _prepare(side: str, ksrc: str, notifier: str, fragments: tuple[str, ...]) -> Prepared:
    try:
        return prepare(ksrc, notifier, fragments=fragments)
    except UserError as e:
        raise UserError(f"the {side} kernel ({ksrc}) did not build: {e}") from None


def _groups(req: CompareRequest, base: Prepared) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, machine, suites) of each run: the suites first, then one per driver profile."""
    groups = [("suites", req.machine, req.suites or tuple(str(paths.REPO / s) for s in DEFAULT_SUITES))]
    names = req.drivers or (() if req.suites else tuple(drivers.known_drivers()))
    config = kconfig.read_config_values(base.build.config)
    for name in names:
        profile = drivers.load_driver(name)
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
