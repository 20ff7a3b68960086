"""`harness bench --loop`: a maintainer's edit-to-verdict loop, measured end to end (bench.json "loop").

A maintainer edits one file of their tree and asks for a verdict: `harness run --kernel-src TREE -k CASE`.
The bench asks through the application layer (harness/app/run.py and compare.py), in this process: the same
work as the command, without the Python start-up of a new process (about a second).
The bench does exactly that on a git tree of its own (a committed copy of Debian's tree, made once under
the cache: setup, not part of any figure; so is that tree's first, cold build), with a real edit: a new
function in mm/rmap.c whose body differs on every run, so that the compiler and ccache both do real work.
It also builds the same kind of one-file change as a patch through `harness compare` (the base is Debian's
tree, cached; the patched kernel builds on a copy of the base's build).

Keys of bench.json "loop" (times in seconds, wall clock):
  edit_to_verdict_s       the edit, then the run use case (`harness run -k CASE`) on the user tree, to its verdict
  edit_to_verdict_parts   where that time went, from the run's timings.json and outcomes.json:
                            config_s (composing the .config), build_s (the incremental build),
                            image_s (modules staging, initramfs), boot_s (QEMU start to SSH),
                            test_s (the case itself), other_s (the rest: pytest's start-up,
                            collection, the guest's shutdown, writing results)
  verdict                 the case's outcome (a figure of a run that did not pass says so)
  compare_one_file_s      the compare use case (`harness compare --patch ONE_FILE.patch -k CASE SUITE`) to its end
  compare_parts           base_prepare_s / patched_prepare_s (finding or building each kernel), runs_s (the
                          case on both kernels: boots and tests), other_s (the rest: start-up, pytest, the
                          VMs' shutdown); and within patched_prepare_s: patched_copy_s (the patched copy of
                          the tree), patched_config_s, patched_kernel_s (seeding the build from the base's,
                          then make), patched_make_s (the build's own stamp: make after the seeding),
                          patched_image_s
  case, file, tree        what was measured: the -k expression, the edited file, the user tree
  setup_s                 making the user tree and its cold build, when this bench had to (else null)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from harness import paths
from harness.app.compare import CompareRequest, run_compare
from harness.app.kernel import KernelChoice
from harness.app.run import RunRequest, run
from harness.errors import UserError
from harness.kernel import source
from harness.kernel.build import IN_TREE_PREFIX

SERIES = "6.12"
EDITED = "mm/rmap.c"
SUITE = "suites/test_events.py"
CASE = "munmap and whole"  # -k: one event case of SUITE
T = TypeVar("T")


class LoopBenchError(UserError):
    pass


def loop_tree(series: str = SERIES) -> Path:
    """The bench's own user tree: a git repository holding a copy of Debian's linux-source-SERIES."""
    tree = paths.cache_root() / "loop-bench" / f"linux-{series}"
    if (tree / ".git").is_dir():
        return tree
    debian = source.debian_tree(series)
    tmp = tree.with_name(f".tmp-{tree.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The tree's files, not the harness's build directories inside it
    tar = subprocess.Popen(["tar", "-C", str(debian.path), f"--exclude=./{IN_TREE_PREFIX}*",
                            f"--exclude=./{source.STAMP}", "-cf", "-", "."], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(tmp), "-xf", "-"], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise LoopBenchError(f"copying {debian.path} failed")
    # Debian's .gitignore ignores everything at the top level (its packaging repository holds no source)
    ignore = tmp / ".gitignore"
    text = ignore.read_text()
    if (cut := text.find("#\n# Debian packaging")) >= 0:
        ignore.write_text(text[:cut])
    git = ["git", "-C", str(tmp), "-c", "user.name=loop bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q", str(tmp)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", f"Debian linux-source-{series} {debian.identity}"], check=True)
    tmp.rename(tree)
    return tree


def edited(original: str, mark: int) -> str:
    """`original` plus a function whose value is `mark`: new code on every run (a comment could be a ccache hit)."""
    return f"{original}\nstatic int __maybe_unused harness_loop_bench_mark(void)\n{{\n\treturn {mark};\n}}\n"


def one_file_patch(tree: Path, mark: int) -> str:
    """The same change to EDITED, as a patch `harness compare` applies to Debian's tree."""
    before = (tree / EDITED).read_text()
    diff = difflib.unified_diff(before.splitlines(keepends=True), edited(before, mark).splitlines(keepends=True),
                                f"a/{EDITED}", f"b/{EDITED}")
    return ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            "From: harness loop bench <bench@localhost>\n"
            "Subject: [PATCH] mm/rmap: a one-file change (harness bench --loop)\n\n---\n"
            f"diff --git a/{EDITED} b/{EDITED}\n" + "".join(diff))


def _logged(log: Path, call: Callable[[], T]) -> tuple[T, float]:
    """`call()` with everything it and its children print going to `log`: its result, and wall seconds."""
    started = time.monotonic()
    with _output_to(log):
        result = call()
    return result, round(time.monotonic() - started, 2)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (make's, QEMU's) and sys.stdout/stderr (pytest's) into `log` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log, "w") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
            out.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _run_case(tree: Path, machine: str, results: Path, log: Path) -> tuple[int, float]:
    """The run use case, as `harness run --kernel-src TREE --machine M -k CASE SUITE` runs it."""
    request = RunRequest(KernelChoice(str(tree)), machine, (str(paths.REPO / SUITE),), results, CASE)
    result, wall = _logged(log, lambda: run(request))
    return result.exit_code, wall


def _run_parts(run_dir: Path, wall: float) -> tuple[dict[str, float], str]:
    timings = json.loads((run_dir / "timings.json").read_text())
    outcomes = json.loads((run_dir / "outcomes.json").read_text())
    prepare = timings.get("prepare", {})
    parts = {"config_s": prepare.get("config_s", 0.0) + prepare.get("source_s", 0.0),
             "build_s": prepare.get("kernel_s", 0.0), "image_s": prepare.get("image_s", 0.0),
             "boot_s": sum(b.get("boot_to_ssh_s") or 0.0 for b in timings.get("boots", [])),
             "test_s": sum(r.get("duration_s") or 0.0 for r in outcomes)}
    parts = {k: round(v, 2) for k, v in parts.items()}
    parts["other_s"] = round(wall - sum(parts.values()), 2)
    verdict = ",".join(sorted({r["outcome"] for r in outcomes})) or "NONE"
    return parts, verdict


def run_loop(out_dir: Path, machine: str = "default", compare: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_started = time.monotonic()
    fresh = not (paths.cache_root() / "loop-bench" / f"linux-{SERIES}" / ".git").is_dir()
    tree = loop_tree()
    # Setup: the tree's first build (cold, out of tree in builds/), and a run that leaves image and guest ready
    code, warm_s = _run_case(tree, machine, out_dir / "loop-setup", out_dir / "loop-setup.log")
    if code not in (0, 1):
        raise LoopBenchError(f"the setup run on {tree} failed (exit {code}): {out_dir / 'loop-setup.log'}")
    setup_s = round(time.monotonic() - setup_started, 1) if fresh or warm_s > 120 else None
    figures: dict[str, object] = {"case": CASE, "file": EDITED, "tree": str(tree), "setup_s": setup_s}

    mark = time.time_ns() % 2**31
    target = tree / EDITED
    original = target.read_text()
    try:
        target.write_text(edited(original, mark))  # the edit: the clock starts here
        started = time.monotonic()
        code, _ = _run_case(tree, machine, out_dir / "loop-run", out_dir / "loop-run.log")
        wall = round(time.monotonic() - started, 2)
    finally:
        target.write_text(original)  # the tree as committed; its next build recompiles this file once more
    if not (out_dir / "loop-run" / "timings.json").exists():
        raise LoopBenchError(f"the edited tree's run wrote no results (exit {code}): {out_dir / 'loop-run.log'}")
    parts, verdict = _run_parts(out_dir / "loop-run", wall)
    figures |= {"edit_to_verdict_s": wall, "edit_to_verdict_parts": parts, "verdict": verdict}

    if compare:
        figures |= _compare_one_file(out_dir, tree, mark + 1, machine)
    return figures


def _compare_one_file(out_dir: Path, tree: Path, mark: int, machine: str) -> dict[str, object]:
    patch = out_dir / "one-file.patch"
    patch.write_text(one_file_patch(tree, mark))
    results = out_dir / "compare"
    request = CompareRequest(patch=(str(patch),), machine=machine, suites=(str(paths.REPO / SUITE),),
                             results_dir=results, k=CASE)
    compared, wall = _logged(out_dir / "compare.log", lambda: run_compare(request))
    code = compared.exit_code
    report = results / "compare.json"
    if not report.exists():
        raise LoopBenchError(f"harness compare wrote no compare.json: {out_dir / 'compare.log'}")
    builds = json.loads(report.read_text()).get("builds", {})
    base, patched = builds.get("base", {}), builds.get("patched", {})
    runs_s = 0.0
    for timings in results.glob("*/*/timings.json"):  # base/suites, patched/suites
        t = json.loads(timings.read_text())
        runs_s += sum(b.get("boot_to_ssh_s") or 0.0 for b in t.get("boots", []))
    for outcomes in results.glob("*/*/outcomes.json"):
        runs_s += sum(r.get("duration_s") or 0.0 for r in json.loads(outcomes.read_text()))
    parts = {"base_prepare_s": base.get("prepare_s"), "patched_prepare_s": patched.get("prepare_s"),
             "runs_s": round(runs_s, 2)}
    known = sum(v for v in parts.values() if isinstance(v, (int, float)))
    parts["other_s"] = round(wall - known, 2)
    # within patched_prepare_s: the patched copy of the tree, the seeded build (make's own part), the image
    parts |= {"patched_copy_s": patched.get("source_s"), "patched_config_s": patched.get("config_s"),
              "patched_kernel_s": patched.get("kernel_s"), "patched_make_s": patched.get("build_s"),
              "patched_image_s": patched.get("image_s")}
    _drop_patched(results)
    return {"compare_one_file_s": wall, "compare_parts": parts, "compare_exit": code}


def _drop_patched(results: Path) -> None:
    """The patched tree and its build are this bench's alone (its change is new every run): not kept."""
    for kernel_json in results.glob("patched/*/kernel.json"):
        k = json.loads(kernel_json.read_text())
        tree, build = Path(k["tree"]), Path(k["build_dir"])
        if "patched" not in tree.parts:
            continue
        shutil.rmtree(build.resolve(), ignore_errors=True)  # inside the patched tree (build.py:build_dir)
        if build.is_symlink():
            build.unlink()
        shutil.rmtree(tree, ignore_errors=True)
