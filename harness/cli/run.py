"""`harness run`: prepare the kernel, then run suites under pytest with every result in one directory.

    harness run [--kernel-src KSRC] [--notifier on|off] [--fragment NAME]... [--machine PROFILE]
                [--results-dir DIR] [-k EXPR] [--boot-timeout S] [--guest-modules M,...] [-j N] [--ktap]
                [SUITES...]

--ktap prints the results as KTAP v1 on stdout (harness/results/ktap.py), everything else on stderr.
-j N runs the tests on N pytest-xdist workers, each with VMs of its own, into the one results directory
(the pytest plugin merges outcomes.json, timings.json and JUnit). The default, 1, is what a matrix cell
runs: the matrix already runs its cells side by side.

Other commands run suites through `run(RunRequest)`, not through this command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.atomic import check_output_dir
from harness.cli import options
from harness.cli.options import KernelChoice
from harness.kernel.prepare import prepare
from harness.results import junit, ktap, rundir
from harness.results.model import read_results
from harness.vm.machine import check_devices, load_profile


@dataclass(frozen=True)
class RunRequest:
    kernel: KernelChoice
    machine: str = "default"
    suites: tuple[str, ...] = ()  # files or directories; none: the repository's suites/
    results_dir: Path | None = None
    k: str | None = None
    boot_timeout: float | None = None
    guest_modules: str = ""
    quiet: bool = False  # pytest's progress on stderr, leaving stdout to the caller's report (compare)
    jobs: int = 1  # pytest-xdist workers; 1 runs the tests in this process


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # pytest's
    run_dir: Path  # junit.xml, outcomes.json and every log of the run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="build, boot and run the suites; print a summary", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_kernel(p)
    options.add_machine(p)
    options.add_results_dir(p)
    options.add_run_tuning(p)
    p.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N",
                   help="run the tests on N workers at once, each with VMs of its own (default 1)")
    p.add_argument("--ktap", action="store_true",
                   help="print the results as KTAP v1 on stdout; pytest's output and the summary go to stderr")
    p.add_argument("suites", nargs="*", help="suite files or directories (default: suites/)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(RunRequest(KernelChoice.from_args(args), args.machine, tuple(args.suites), args.results_dir,
                            args.k, args.boot_timeout, args.guest_modules, quiet=args.ktap, jobs=args.jobs))
    if args.ktap:
        print(junit.run_summary(result.run_dir), file=sys.stderr)
        sys.stdout.write(ktap.render(read_results(rundir.RunDir(result.run_dir).outcomes),
                                     f"mmu-notifier-harness: results in {result.run_dir}"))
        return result.exit_code
    print(junit.run_summary(result.run_dir))
    return result.exit_code


def run(request: RunRequest) -> RunResult:
    run_dir = rundir.new_run_dir(request.results_dir)
    # Bad input fails here, in a second, not after a 10-minute kernel build.
    check_output_dir(run_dir)
    check_devices(load_profile(request.machine))
    kernel = request.kernel
    with contextlib.redirect_stdout(sys.stderr) if request.quiet else contextlib.nullcontext():
        prepared = prepare(kernel.kernel_src, kernel.notifier, fragments=kernel.fragments)  # errors before pytest
    pytest_args = [*(request.suites or [str(paths.REPO / "suites")]), f"--results-dir={run_dir}",
                   f"--junitxml={run_dir / 'junit.xml'}", f"--machine={request.machine}",
                   f"--notifier={kernel.notifier}", "-o", "junit_family=xunit2",
                   # every test's captured output (a kernel selftest's own log) goes into its JUnit case
                   "-o", "junit_logging=system-out",
                   # the build this command just did, for timings.json (the session then finds it cached)
                   f"--prepared-timings={json.dumps(prepared.timings)}"]
    if kernel.kernel_src:
        pytest_args.append(f"--kernel-src={kernel.kernel_src}")
    pytest_args += [f"--fragment={name}" for name in kernel.fragments]
    if request.k:
        pytest_args += ["-k", request.k]
    if request.boot_timeout:
        pytest_args.append(f"--boot-timeout={request.boot_timeout}")
    if request.guest_modules:
        pytest_args.append(f"--guest-modules={request.guest_modules}")
    pytest_args += xdist_args(request.jobs)
    # In-process, so that SIGTERM/Ctrl-C reach the code that owns the VMs (harness/vm/console.py stops them).
    import pytest

    with contextlib.redirect_stdout(sys.stderr) if request.quiet else contextlib.nullcontext():
        code = int(pytest.main([*pytest_args, f"--rootdir={paths.REPO}"]))
    return RunResult(code, run_dir)



def xdist_args(jobs: int) -> list[str]:
    """pytest's arguments for `jobs` workers: loadgroup keeps a machine profile's tests on one worker
    (harness/pytest_plugin.py groups them) and hands out the rest one by one as workers free up."""
    return ["-n", str(jobs), "--dist", "loadgroup"] if jobs > 1 else []


def _jobs(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: needs at least 1 worker")
    return n
