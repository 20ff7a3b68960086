"""The `run` use case: prepare the kernel once, then run suites under pytest, in this process.

The kernel is prepared here, before pytest starts, so that bad input fails in a second and a build's
progress is not pytest's; pytest then gets that same Prepared through a plugin object
(harness/session.py), and its workers under xdist a reference to it: prepare() runs once per run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.app.kernel import KernelChoice
from harness.atomic import check_output_dir
from harness.errors import EXIT_INTERRUPTED, UserError
from harness.kernel.prepare import Prepared, prepare
from harness.results import junit, rundir
from harness.results.model import Result, read_results
from harness.session import PreparedKernel
from harness.vm.machine import check_devices, load_profile


@dataclass(frozen=True)
class RunRequest:
    kernel: KernelChoice = field(default_factory=KernelChoice)
    machine: str = "default"
    suites: tuple[str, ...] = ()  # files or directories; none: the repository's suites/
    results_dir: Path | None = None
    k: str | None = None
    boot_timeout: float | None = None
    guest_modules: str = ""
    quiet: bool = False  # pytest's progress on stderr, leaving stdout to the caller's report (compare, --ktap)
    jobs: int = 1  # pytest-xdist workers; 1 runs the tests in this process
    reruns: int | None = None  # how often a failing test runs again on a fresh guest (None: the plugin's 1)
    gdb_on_crash: bool = False  # guests with gdb's stub, a crashed one held for gdb (one worker only)
    fresh_guest: bool = False  # every test on a guest restored from the first boot's snapshot


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # pytest's: 0 all passed, 1 some did not, 3 internal error, 4 usage, 5 none ran; 130 interrupted
    run_dir: Path  # junit.xml, outcomes.json and every log of the run
    prepared: Prepared = field(repr=False)

    @property
    def results(self) -> list[Result]:
        return read_results(rundir.RunDir(self.run_dir).outcomes)

    @property
    def summary(self) -> str:
        return junit.run_summary(self.run_dir)


def run(request: RunRequest) -> RunResult:
    run_dir = _checked_run_dir(request)
    kernel = request.kernel
    with _quiet(request.quiet):
        prepared = prepare(kernel.kernel_src, kernel.notifier, fragments=kernel.fragments, arch=kernel.arch)
    return run_prepared(request, prepared, run_dir)


def run_on(request: RunRequest, prepared: Prepared) -> RunResult:
    """`run` on a kernel the caller prepared already (compare, driver): request.kernel must describe it."""
    return run_prepared(request, prepared, _checked_run_dir(request))


def _checked_run_dir(request: RunRequest) -> Path:
    """The run's directory, and the input checked: bad input fails in a second, not after a kernel build."""
    if request.gdb_on_crash and request.jobs > 1:
        raise UserError("--gdb-on-crash holds a crashed guest for gdb on the terminal: one worker only (no -j)")
    run_dir = rundir.new_run_dir(request.results_dir)
    check_output_dir(run_dir)
    check_devices(load_profile(request.machine, request.kernel.arch))
    return run_dir


def run_prepared(request: RunRequest, prepared: Prepared, run_dir: Path) -> RunResult:
    """pytest over the suites, in this process (so that SIGTERM/Ctrl-C reach the code that owns the VMs:
    harness/vm/console.py stops them), with `prepared` handed to the plugin."""
    import pytest

    with _quiet(request.quiet):
        code = int(pytest.main(pytest_args(request, run_dir), plugins=[PreparedKernel(prepared)]))
    # pytest's "interrupted" is 2, which is `harness`'s bad input: say it as every command says it
    return RunResult(EXIT_INTERRUPTED if code == pytest.ExitCode.INTERRUPTED else code, run_dir, prepared)


def pytest_args(request: RunRequest, run_dir: Path) -> list[str]:
    """The session's options: where results go, and the kernel and machine (for suites that read them)."""
    kernel = request.kernel
    args = [*(request.suites or [str(paths.REPO / "suites")]), f"--results-dir={run_dir}",
            f"--junitxml={run_dir / 'junit.xml'}", f"--machine={request.machine}", f"--notifier={kernel.notifier}",
            "-o", "junit_family=xunit2",
            # every test's captured output (a kernel selftest's own log) goes into its JUnit case
            "-o", "junit_logging=system-out", f"--rootdir={paths.REPO}"]
    if kernel.kernel_src:
        args.append(f"--kernel-src={kernel.kernel_src}")
    args += [f"--fragment={name}" for name in kernel.fragments] + [f"--arch={kernel.arch}"]
    if request.k:
        args += ["-k", request.k]
    if request.boot_timeout:
        args.append(f"--boot-timeout={request.boot_timeout}")
    if request.guest_modules:
        args.append(f"--guest-modules={request.guest_modules}")
    if request.reruns is not None:
        args.append(f"--reruns={request.reruns}")
    if request.gdb_on_crash:
        args.append("--gdb-on-crash")
    if request.fresh_guest:
        args.append("--fresh-guest")
    return args + xdist_args(request.jobs)


def xdist_args(jobs: int) -> list[str]:
    """pytest's arguments for `jobs` workers: loadgroup keeps a machine profile's tests on one worker
    (harness/parallel.py groups them) and hands out the rest one by one as workers free up."""
    return ["-n", str(jobs), "--dist", "loadgroup"] if jobs > 1 else []


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext():
        yield
