"""A run's results as a KCIDB v5.3 document, what KernelCI gathers across labs (`harness report RUN --kcidb FILE`).

    checkouts  one per kernel tree identity: a Debian source package version, a git commit, or either with a
               series applied (`harness compare`: the patched side's identity ends in +KEY, the series' key; its
               patches by origin and subject, and KCIDB's patchset hash where the tree recorded each patch's sha256)
    builds     one per (tree, architecture, final .config): x86_64 or arm64, the config named by its notifier axis
               and fragment, status,
               duration (from the build's stamp, where the build is still in this cache), the .config used
    tests      one per test of each cell: path mmu_notifier.<suite>.<test>, status mapped from our outcome,
               duration, the console log, the dmesg, and the notifier events it saw (total as `number`); an
               evidence test's mirror counters (its re-faults as `number`)

Any run directory `harness report` reads (a matrix run, a `harness run`), or a `harness compare` directory
(its base/ and patched/ runs). Files are referred to by URL: `url_base` + their path in the run directory when
the directory is published somewhere, else file:// URLs of this machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from harness.kernel.arch import HOST
from harness.kernel.build import STAMP, content_key
from harness.kernel.patches import TREE_STAMP
from harness.results.load import CellReport, Entry, RunReport, load_run
from harness.results.model import read_json
from harness.results.outcome import Outcome
from harness.results.rundir import RunDir

ORIGIN = "mmu_notifier_harness"
VERSION = {"major": 5, "minor": 3}
EXCERPT_MAX = 16384
# KCIDB's statuses say what a test says of the tested code. XFAIL is a known kernel bug that the suite
# expects (kselftest counts its xfail as a pass); CRASH is the kernel failing; TIMEOUT leaves the code's
# state unknown (ERROR), and so does FLOOD (the guest sent more than the host takes); INFRA means the test
# never ran for want of a guest (MISS). A FLAKY test failed and then passed on a fresh guest: KCIDB has no
# such status, so it is a PASS with misc.flaky (as a CI that retries reports it), its first failure the excerpt.
# Our outcome is in misc.
STATUS = {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL", Outcome.SKIP: "SKIP", Outcome.XFAIL: "PASS",
          Outcome.ERROR: "ERROR", Outcome.TIMEOUT: "ERROR", Outcome.CRASH: "FAIL", Outcome.FLOOD: "ERROR",
          Outcome.INFRA: "MISS", Outcome.FLAKY: "PASS"}


def runs_of(run_dir: Path) -> list[RunReport]:
    """The runs a directory holds: itself, or for a `harness compare` directory each run of both sides."""
    if (run_dir / "compare.json").exists() and not (run_dir / "outcomes.json").exists():
        dirs = sorted(p.parent for p in run_dir.glob("*/*/kernel.json"))
        return [load_run(d) for d in dirs]
    return [load_run(run_dir)]


def _url(path: Path, url_base: str | None, top: Path) -> str:
    if url_base:
        return f"{url_base.rstrip('/')}/{path.resolve().relative_to(top.resolve())}"
    return path.resolve().as_uri()


def test_path(name: str) -> str:
    """mmu_notifier.<suite>.<test>: suites/test_events.py::test_mprotect[rw-ro] is mmu_notifier.events.mprotect_rw-ro"""
    file, _, test = name.partition("::")
    suite = Path(file).stem.removeprefix("test_") or "suite"
    test = test.rsplit("::", 1)[-1].removeprefix("test_") or "cell"
    parts = [re.sub(r"[^A-Za-z0-9_-]+", "_", p).strip("_") or "_" for p in ("mmu_notifier", suite, test)]
    return ".".join(parts)


def config_name(cell: CellReport) -> str:
    c = cell.cell
    frag = "+" + "+".join(Path(f).stem for f in c.fragment.split()) if c.fragment else ""
    return f"tinyconfig+base+drivers+notifier_{c.notifier}{frag}"


def document(run_dir: Path, url_base: str | None = None) -> dict[str, Any]:
    top = Path(run_dir)
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: list[dict[str, Any]] = []
    for run in runs_of(top):
        for cell in run.cells:
            cell_dir = run.dir / cell.dir
            kernel = read_json(cell_dir / "kernel.json")
            kernel = kernel if isinstance(kernel, dict) else {}
            identity = str(kernel.get("identity") or cell.cell.kernel)
            checkout_id = f"{ORIGIN}:{content_key(identity)}"
            checkouts.setdefault(checkout_id, _checkout(checkout_id, identity, kernel))
            build_dir = Path(str(kernel.get("build_dir") or ""))
            config_key = build_dir.name.rsplit("-", 1)[-1] if kernel.get("build_dir") else content_key(
                cell.cell.kernel, cell.cell.notifier, cell.cell.fragment,
                *([cell.cell.arch] if cell.cell.arch != HOST else []))
            build_id = f"{checkout_id}:{config_key}"
            if build_id not in builds:
                builds[build_id] = _build(build_id, checkout_id, cell, cell_dir, build_dir, url_base, top)
            tests += [_test(build_id, run, cell, entry, url_base, top) for entry in cell.tests]
            if not cell.tests:  # a cell that ended without a test: its outcome stands for it
                tests.append(_test(build_id, run, cell, Entry(f"{cell.cell.suite}::cell", cell.outcome, cell.reason,
                                                              cell.duration_s or 0.0, None), url_base, top))
    return {"version": VERSION, "checkouts": list(checkouts.values()), "builds": list(builds.values()),
            "tests": tests}


def _checkout(checkout_id: str, identity: str, kernel: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": checkout_id, "origin": ORIGIN, "comment": identity, "valid": True,
                           "misc": {"identity": identity}}
    if m := re.match(r"debian:(linux-source-[\d.]+)=", identity):
        out["tree_name"] = f"debian-{m[1]}"
    if m := re.match(r"git:([0-9a-f]{40})(-dirty)?", identity):
        out["git_commit_hash"] = m[1]
        out["misc"]["dirty"] = bool(m[2])
    # A patched tree (harness compare) keeps the series it applied, by origin and subject, next to its sources.
    stamp = Path(str(kernel.get("tree") or "")) / TREE_STAMP
    meta = read_json(stamp) if kernel.get("tree") else None
    if isinstance(meta, dict):
        patches = list(meta.get("patches") or [])
        out["misc"] |= {"base_identity": meta.get("base_identity"), "patches": patches}
        hashes = [p.get("sha256") for p in patches if isinstance(p, dict)]
        if patches and all(isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes):
            # KCIDB's patchset hash: sha256 over the patches' newline-terminated sha256s, in order
            out["patchset_hash"] = hashlib.sha256("".join(f"{h}\n" for h in hashes).encode()).hexdigest()
    elif "+" not in identity:
        out["patchset_hash"] = ""  # KCIDB: no patches applied to the base
    return out


def _build(build_id: str, checkout_id: str, cell: CellReport, cell_dir: Path, build_dir: Path,
           url_base: str | None, top: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "architecture": cell.cell.arch,
                           "compiler": "gcc", "config_name": config_name(cell),
                           "status": "FAIL" if cell.build else "PASS",
                           "command": cell.cell.build_reproducer(),
                           "misc": {"notifier": cell.cell.notifier, "fragment": cell.cell.fragment,
                                    "release": cell.release}}
    if (config := cell_dir / "kernel.config").exists():
        out["config_url"] = _url(config, url_base, top)
    stamp = read_json(build_dir / STAMP) if build_dir.name else None
    if isinstance(stamp, dict):
        out["duration"] = float(stamp.get("build_s") or 0.0)
        out["misc"]["ccache"] = stamp.get("ccache")
    if cell.build:  # the matrix's record of a kernel that did not build
        out["log_excerpt"] = cell.build.error[-EXCERPT_MAX:]
        log = cell_dir / cell.build.log
        if log.exists():
            out["log_url"] = _url(log, url_base, top)
    return out


def _test(build_id: str, run: RunReport, cell: CellReport, entry: Entry, url_base: str | None,
          top: Path) -> dict[str, Any]:
    run_name = run.dir.resolve().relative_to(top.resolve().parent)
    out: dict[str, Any] = {
        "id": f"{ORIGIN}:{run_name}/{cell.id}/{entry.name}", "build_id": build_id, "origin": ORIGIN,
        "path": test_path(entry.name), "status": STATUS[entry.outcome], "duration": entry.duration_s,
        "environment": {"comment": f"QEMU x86_64 guest, machine profile {cell.cell.machine}",
                        "misc": {"machine": cell.cell.machine}},
        "misc": {"outcome": entry.outcome.value, "cell": cell.id, "test": entry.name,
                 "reproducer": entry.reproducer or cell.reproducer},
    }
    if entry.reason:
        out["log_excerpt"] = entry.reason[-EXCERPT_MAX:]
    if entry.outcome == Outcome.FLAKY:
        out["misc"]["flaky"] = True
    if entry.console_log:
        out["log_url"] = _url(run.dir / entry.console_log, url_base, top)
    if entry.dmesg:
        out["output_files"] = [{"name": "dmesg.txt", "url": _url(run.dir / entry.dmesg, url_base, top)}]
    if entry.events:
        # How many invalidations the notifier saw, by event name in misc, in all as the test's number
        out["misc"]["events"] = entry.events
        out["number"] = {"value": sum(entry.events.values()), "unit": "invalidations"}
    if evidence := mirror_counters(RunDir(run.dir / cell.dir).test_dir(entry.name)):
        # The evidence suite's mirror: what each mode received, acted on and re-faulted (docs/evidence.md); the
        # number is what a mirror that honours the event re-faults (context), else one that ignores it (blind)
        out["misc"]["evidence"] = evidence
        mode = evidence.get("context") or evidence.get("blind") or {}
        if isinstance(mode.get("refaults"), int):
            out["number"] = {"value": mode["refaults"], "unit": "re-faults"}
    return out


def mirror_counters(test_dir: Path) -> dict[str, dict[str, int | str]]:
    """<workload>-<mode>.txt of an evidence test (the probe's `mirror` line: key=value ...), by mode."""
    found: dict[str, dict[str, int | str]] = {}
    for path in sorted(test_dir.glob("*-*.txt")) if test_dir.is_dir() else []:
        mode = path.stem.rsplit("-", 1)[1]
        if mode not in ("blind", "context", "unsafe"):
            continue
        fields = dict(word.split("=", 1) for word in path.read_text().split() if "=" in word)
        found[mode] = {k: int(v) if v.isdigit() else v for k, v in fields.items() if k not in ("start", "end")}
    return found


def write(run_dir: Path, dest: Path, url_base: str | None = None) -> dict[str, Any]:
    doc = document(run_dir, url_base)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=1) + "\n")
    return doc
