"""The layout of a run's results directory: the one place that names its files, for writers and readers.

    <run>/                  results/<time> (`harness run`), or one <cell-id>/ of a matrix run
        outcomes.json       one Result per test (harness/results/model.py)
        junit.xml           pytest's JUnit XML, each case with its `outcome` property
        timings.json        prepare and boot-to-SSH times
        kernel.json         the kernel's tree, identity, release; kernel.config its .config
        vm-N/               each VM's console.log, qemu-argv.json, commands.log (vm-gwW-N: xdist worker gwW's)
        tests/<test>/       a test's dmesg.txt, events.json, post-mortem files
        cell.json           a matrix cell only: how it ended (the runner writes it, with harness.log)

The pytest plugin and the matrix runner write through RunDir; harness report, harness driver and
the run summary read through it, so a test's folder is found where it was made.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from pathlib import Path

from harness import paths
from harness.atomic import check_output_dir
from harness.results.model import Timings

RUN_JSON = "run.json"  # a matrix run's own record, next to its cell directories
CELL_JSON = "cell.json"


def new_run_dir(given: str | Path | None = None, store: Path | None = None) -> Path:
    """`given` as it is, or a fresh <store>/<time>[-N], made here (the store defaults to results/).

    Made with one mkdir, which fails if the name is taken: runs started in the same second, in this
    process or any other, each get a directory of their own (-2, -3, ...), never one another's."""
    if given:
        return Path(given)
    base = store or paths.results_root()
    check_output_dir(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def run_order(name: str) -> tuple[str, int]:
    """How runs of one store sort, oldest first: by time, then by suffix (20260101-000000-10 after -9)."""
    stamp, dash, n = name.rpartition("-")
    if dash and n.isdigit() and re.fullmatch(r"\d{8}-\d{6}", stamp):
        return stamp, int(n)
    return name, 1


def point_latest(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` by a rename: runs (or xdist workers) doing it at once never fail."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_dir_name(nodeid: str) -> str:
    """A test's folder under tests/: its node id with anything but [A-Za-z0-9_.-] made one underscore."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


class RunDir:
    """One run's results directory. RunDir(root) only names paths; `make` creates the directory."""

    def __init__(self, root: Path):
        self.root = root
        self.timings = Timings()  # filled in by the plugin as the run goes, saved at its end

    @classmethod
    def make(cls, root: Path) -> RunDir:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def outcomes(self) -> Path:
        return self.root / "outcomes.json"

    @property
    def junit(self) -> Path:
        return self.root / "junit.xml"

    @property
    def timings_json(self) -> Path:
        return self.root / "timings.json"

    @property
    def kernel_json(self) -> Path:
        return self.root / "kernel.json"

    @property
    def cell_json(self) -> Path:
        return self.root / CELL_JSON

    @property
    def harness_log(self) -> Path:
        return self.root / "harness.log"

    def test_dir(self, nodeid: str) -> Path:
        """Where one test's own files go (not created here: a reader must not make folders)."""
        return self.root / "tests" / test_dir_name(nodeid)

    def vm_dir(self, n: int, worker: str = "") -> Path:
        """The folder of the n-th VM a process booted: vm-N, or vm-<worker>-N for an xdist worker's."""
        return self.root / (f"vm-{worker}-{n}" if worker else f"vm-{n}")

    def vm_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.glob("vm-*") if p.is_dir())

    def console_logs(self) -> list[Path]:
        return sorted(self.root.glob("vm-*/console.log"))

    def save_timings(self) -> None:
        try:
            self.timings.write(self.timings_json)
        except OSError as e:  # a full disk: said once, here; the test that met it already stopped the run
            print(f"\nharness: {self.timings_json} was not written: {e.strerror}", file=sys.stderr)
