"""pytest plugin: suites get a prepared kernel, a booted VM shared by many tests, and a guest session.

One VM serves every test of a session (kernel, machine profile). Each test runs fresh guest
processes and marks dmesg at its start, so the splats after the mark are its own. A test that
crashes or wedges the guest gets the VM replaced before the next test runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import observe, paths, pipeline
from .machine import VM, BootError, load_profile, probe_accel
from .splat import find_splats, is_allowed
from .ssh import CommandResult, SSHError

DEFAULT_BOOT_TIMEOUT = 120.0  # TCG on 2 cores boots in ~3 s; a debug kernel may take far longer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "kernel under test")
    group.addoption("--kernel-src", default=os.environ.get("KSRC") or None,
                    help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    group.addoption("--notifier", default="on", choices=["on", "off"], help="the CONFIG_MMU_NOTIFIER axis")
    group.addoption("--machine", default=os.environ.get("MACHINE", "default"), help="configs/machines/NAME.yaml")
    group.addoption("--results-dir", default=None, help="where this run's results go (default: results/<time>)")
    group.addoption("--boot-timeout", type=float, default=DEFAULT_BOOT_TIMEOUT, help="seconds to the ready marker")
    group.addoption("--guest-modules", default="",
                    help="comma-separated guest/ modules to load at boot, e.g. fault_panic (fault injection)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_splats(*regexes): kernel splat titles this test tolerates")


class RunDir:
    """results/<run>/: console logs per VM, per-test dmesg and events, the .config, timings."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, Any] = {}

    def test_dir(self, nodeid: str) -> Path:
        d = self.root / "tests" / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save_timings(self) -> None:
        (self.root / "timings.json").write_text(json.dumps(self.timings, indent=2) + "\n")


def new_run_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    base = paths.results_root()
    path = base / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while path.exists():
        n += 1
        path = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    return path


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config) -> Iterator[RunDir]:
    rd = RunDir(new_run_dir(pytestconfig.getoption("results_dir")))
    latest = paths.results_root() / "latest"
    if rd.root.parent == paths.results_root():
        latest.unlink(missing_ok=True)
        latest.symlink_to(rd.root.name)
    yield rd
    rd.save_timings()


@pytest.fixture(scope="session")
def kernel(pytestconfig: pytest.Config, run_dir: RunDir) -> pipeline.Prepared:
    """The kernel build and image for this session (built on first use, cached by content)."""
    prepared = pipeline.prepare(pytestconfig.getoption("kernel_src"), pytestconfig.getoption("notifier"))
    (run_dir.root / "kernel.config").write_bytes(prepared.build.config.read_bytes())
    (run_dir.root / "kernel.json").write_text(json.dumps({
        "tree": str(prepared.tree.path), "version": prepared.tree.version, "identity": prepared.tree.identity,
        "build_dir": str(prepared.build.dir), "release": prepared.build.release, "notifier": prepared.notifier,
        "image": str(prepared.image.dir),
    }, indent=2) + "\n")
    run_dir.timings["prepare"] = prepared.timings
    return prepared


class VMs:
    """Boots a VM on first need and replaces it when a test left it dead or crashed."""

    def __init__(self, prepared: pipeline.Prepared, machine: str, run_dir: RunDir, boot_timeout: float,
                 extra_modules: str = ""):
        self.prepared = prepared
        self.modules = [m for m in ["mmu_probe" if prepared.build.has("MMU_NOTIFIER") else "",
                                    *extra_modules.split(",")] if m]
        self.profile = load_profile(machine)
        self.run_dir = run_dir
        self.boot_timeout = boot_timeout
        self.accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
        self.vm: VM | None = None
        self.boots = 0
        self.boot_error: BootError | None = None

    def get(self) -> VM:
        if self.boot_error:
            raise self.boot_error  # a kernel that cannot boot will not boot for the next test either
        if self.vm and not self.vm.alive():
            self.discard()
        if self.vm is None:
            self.boots += 1
            append = (f"harness.modules={','.join(self.modules)}",) if self.modules else ()
            vm = VM(self.profile, self.prepared.build.bzimage, self.prepared.image,
                    self.run_dir.root / f"vm-{self.boots}", accel=self.accel, extra_append=append)
            try:
                vm.start(self.boot_timeout)
            except BootError as e:
                self.boot_error = e
                raise
            self.run_dir.timings.setdefault("boots", []).append({"vm": self.boots, "boot_to_ssh_s": round(vm.boot_s, 2),
                                                                  "accel": self.accel})
            self.vm = vm
        return self.vm

    def discard(self) -> None:
        if self.vm:
            self.vm.stop()
            self.vm = None

    def close(self) -> None:
        self.discard()


@pytest.fixture(scope="session")
def vms(kernel: pipeline.Prepared, pytestconfig: pytest.Config, run_dir: RunDir) -> Iterator[VMs]:
    pool = VMs(kernel, pytestconfig.getoption("machine"), run_dir, pytestconfig.getoption("boot_timeout"),
               pytestconfig.getoption("guest_modules"))
    try:
        yield pool
    finally:
        pool.close()


class Guest:
    """One test's view of the guest: commands, guest programs, the probe, its own dmesg and artifacts."""

    def __init__(self, vm: VM, test_dir: Path, label: str):
        assert vm.ssh
        self.vm = vm
        self.ssh = vm.ssh
        self.dir = test_dir
        self.dmesg = observe.Dmesg(vm.ssh, label)
        self.probe = observe.Probe(vm.ssh)

    def run(self, argv: Sequence[str], timeout: float = 60, check: bool = False) -> CommandResult:
        return self.ssh.run(argv, timeout=timeout, check=check)

    def program(self, name: str, *args: str, timeout: float = 60) -> tuple[CommandResult, dict]:
        """Run /guest/bin/NAME; it must exit 0 and print one JSON object as its last stdout line."""
        result = self.ssh.run([f"/guest/bin/{name}", *args], timeout=timeout)
        if not result.ok:
            pytest.fail(f"guest program {name} failed:\n{result.describe()}")
        lines = result.stdout.strip().splitlines()
        try:
            return result, json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(f"guest program {name} printed no JSON summary:\n{result.describe()}")

    def save(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path


@pytest.fixture
def guest(vms: VMs, run_dir: RunDir, request: pytest.FixtureRequest) -> Iterator[Guest]:
    try:
        vm = vms.get()
    except BootError as e:
        boot_error = e
    else:
        boot_error = None
    if boot_error:  # outside the except block, so that the report is the boot error alone
        pytest.fail(f"guest did not boot: {boot_error}", pytrace=False)
    test_dir = run_dir.test_dir(request.node.nodeid)
    g = Guest(vm, test_dir, request.node.nodeid)
    yield g
    _check_guest_after(vms, g, request)


def _check_guest_after(vms: VMs, g: Guest, request: pytest.FixtureRequest) -> None:
    """Fail the test on a splat it caused; replace a VM it crashed or wedged."""
    vm = g.vm
    console = vm.console
    assert console
    if not vm.alive():
        fatal = console.fatal_splat()
        vms.discard()
        what = f"kernel crashed: {fatal.title}" if fatal else "QEMU exited"
        pytest.fail(f"{what} during {request.node.nodeid}; console log: {vm.console_log}", pytrace=False)
    try:
        log = g.dmesg.since_mark()
    except (SSHError, OSError) as e:
        vms.discard()
        pytest.fail(f"guest stopped answering during the test ({e}); console log: {vm.console_log}", pytrace=False)
    g.save("dmesg.txt", log)
    marker = request.node.get_closest_marker("allow_splats")
    allow = list(marker.args) if marker else []
    splats = [s for s in find_splats(log) if not is_allowed(s, allow)]
    if splats:
        vms.discard()  # a WARN or worse leaves the kernel suspect for the tests after this one
        titles = "; ".join(s.title for s in splats)
        pytest.fail(f"kernel splat(s) during the test: {titles}\n  dmesg: {g.dir / 'dmesg.txt'}\n\n"
                    + splats[0].text, pytrace=False)
