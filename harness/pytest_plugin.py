"""pytest plugin: suites get a prepared kernel, a booted VM shared by many tests, and a guest session.

One VM serves every test of a session (kernel, machine profile). Each test runs fresh guest
processes and marks dmesg at its start, so the splats after the mark are its own. A test that
crashes or wedges the guest gets the VM replaced before the next test runs.

Every test ends as one outcome (harness/results/outcome.py) written to outcomes.json and to JUnit as the
`outcome` property: a kernel splat fails the test that caused it (CRASH for oops/BUG/panic), a
watchdog that fires stops QEMU and makes the test a TIMEOUT, an unreachable guest is INFRA.

Under pytest-xdist (`-n 2 --dist loadgroup`, what `harness run -j 2` passes) each worker has its own
VMs (vm-gw0-1, vm-gw1-1, ...) in the one run directory the controller chose; every test's Result
travels to the controller in its report, each worker's timings at its end, and the controller writes
outcomes.json, timings.json and JUnit. The tests of one machine profile (numa2, kvm, ...) go to one
worker, which boots that VM once (harness/parallel.py).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from harness import paths
from harness.atomic import OutputDirError, check_output_dir, write_text
from harness.kernel.prepare import Prepared, prepare
from harness.observe import probe
from harness.observe.splat import Splat, find_splats, is_allowed
from harness.parallel import Control
from harness.results.model import Boot, Result, Timings, write_results
from harness.results.outcome import SEVERITY, GuestCrash, GuestTimeout, GuestUnreachable, HarnessFault, Outcome
from harness.results.rundir import RunDir, new_run_dir, point_latest
from harness.vm import faults, qmp
from harness.vm.machine import VM, BootError, load_profile, probe_accel
from harness.vm.ssh import CommandFailed, CommandFlooded, CommandResult, CommandTimeout, SSHError

# Defaults for TCG on 2 cores, where this kernel boots in ~2 s; scaled up for debug kernels.
DEFAULT_BOOT_TIMEOUT = 120.0
DEFAULT_TEST_TIMEOUT = 300.0
DEBUG_OPTIONS = ("KASAN", "PROVE_LOCKING", "KCSAN", "DEBUG_KMEMLEAK", "KMSAN")
CRASH_KINDS = {"panic", "oops", "BUG"}  # the rest (WARNING, KASAN, lockdep, ...) fail the test

RESULTS = pytest.StashKey[list[Result]]()
RUN_DIR = pytest.StashKey[RunDir]()
RUN_PATH = pytest.StashKey[Path]()
CONTROL = pytest.StashKey[Control]()  # under xdist: what the controller and its workers share

# How the run directory and each test's Result travel from xdist's controller to its workers and back.
WORKERINPUT_RUN_DIR = "harness_run_dir"
WORKERINPUT_CONTROL = "harness_control"
REPORT_RESULT = "harness_result"  # a TestReport attribute: xdist serialises a report's __dict__


def worker_id(config: pytest.Config) -> str:
    """This process's xdist worker id (gw0, gw1, ...); "" in a run without xdist and on its controller."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else ""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "kernel under test")
    group.addoption("--kernel-src", default=os.environ.get("KSRC") or None,
                    help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    group.addoption("--notifier", default="on", choices=["on", "off"], help="the CONFIG_MMU_NOTIFIER axis")
    group.addoption("--fragment", action="append", default=[], metavar="NAME",
                    help="an extra config fragment: configs/fragments/NAME.config (e.g. debug/kasan) or a path")
    group.addoption("--machine", default=os.environ.get("MACHINE", "default"), help="configs/machines/NAME.yaml")
    group.addoption("--results-dir", default=None,
                    help="where this run's results go, JUnit XML too (default: results/<time>, without JUnit)")
    group.addoption("--boot-timeout", type=float, default=None, help="seconds to the ready marker")
    group.addoption("--test-timeout", type=float, default=None, help="seconds a test may take with its guest")
    group.addoption("--guest-modules", default="",
                    help="comma-separated guest/ modules to load at boot, e.g. fault_panic (fault injection)")
    group.addoption("--prepared-timings", default="", metavar="JSON",
                    help="seconds per stage of this kernel's preparation before pytest started (harness run "
                         "passes its own): added to timings.json's, where this session finds the kernel cached")


@pytest.hookimpl(tryfirst=True)  # before junitxml's own configure reads xmlpath
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_splats(*regexes): kernel splat titles this test tolerates")
    config.addinivalue_line("markers", "test_timeout(seconds): this test's watchdog, before scaling")
    config.addinivalue_line("markers", "machine(profile): boot this test's guest from configs/machines/PROFILE.yaml")
    config.addinivalue_line("markers", "needs_notifier: the test needs CONFIG_MMU_NOTIFIER=y in the kernel under test")
    config.stash[RESULTS] = []
    if wid := worker_id(config):  # an xdist worker writes into the directory its controller chose and checked
        workerinput = config.workerinput  # type: ignore[attr-defined]
        config.stash[RUN_PATH] = Path(workerinput[WORKERINPUT_RUN_DIR])
        config.stash[CONTROL] = Control(Path(workerinput[WORKERINPUT_CONTROL]), wid)
        config.pluginmanager.register(config.stash[CONTROL], "harness-control")
        config.stash[CONTROL].worker_started()
        return
    config.pluginmanager.register(ResultCollector(config.stash[RESULTS]), "harness-results")
    # One results directory per run, made by the first test that uses run_dir. This plugin loads in every
    # pytest of the environment: only a session that names its directory (harness run, the matrix's
    # cells) gets it checked now and JUnit XML written into it; any other writes JUnit only on --junitxml.
    given = config.getoption("results_dir")
    config.stash[RUN_PATH] = new_run_dir(given)
    if given:
        try:
            check_output_dir(config.stash[RUN_PATH])
        except OutputDirError as e:
            raise pytest.UsageError(str(e)) from None
        if not config.option.xmlpath:
            config.option.xmlpath = str(config.stash[RUN_PATH] / "junit.xml")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist's controller, per worker: the run directory every worker writes into, and the folder they share."""
    config: pytest.Config = node.config  # type: ignore[attr-defined]
    if CONTROL not in config.stash:
        config.stash[CONTROL] = Control.make()
        config.pluginmanager.register(config.stash[CONTROL], "harness-control")
    node.workerinput[WORKERINPUT_RUN_DIR] = str(config.stash[RUN_PATH])  # type: ignore[attr-defined]
    node.workerinput[WORKERINPUT_CONTROL] = str(config.stash[CONTROL].folder)  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own, which knows no machine profiles
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    if config.getoption("dist") != "loadgroup" or CONTROL not in config.stash:
        return None
    return config.stash[CONTROL].scheduler(config, log)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends its collection to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    """An xdist worker: which tests go together, for the controller's scheduler."""
    if worker_id(session.config):
        session.config.stash[CONTROL].write_groups(session.items)


def pytest_unconfigure(config: pytest.Config) -> None:
    if CONTROL in config.stash and not worker_id(config):
        config.stash[CONTROL].remove()


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config) -> Iterator[RunDir]:
    rd = RunDir.make(pytestconfig.stash[RUN_PATH])
    pytestconfig.stash[RUN_DIR] = rd
    if rd.root.parent == paths.results_root():
        point_latest(paths.results_root() / "latest", rd.root.name)
    if worker := worker_id(pytestconfig):
        pytestconfig.stash[CONTROL].used_run_dir()
    yield rd
    if worker:  # the controller merges every worker's into timings.json
        pytestconfig.stash[CONTROL].write_timings(rd.timings)
    else:
        rd.save_timings()


@pytest.fixture(scope="session")
def kernel(pytestconfig: pytest.Config, run_dir: RunDir) -> Prepared:
    """The kernel build and image for this session (built on first use, cached by content)."""
    prepared = prepare(pytestconfig.getoption("kernel_src"), pytestconfig.getoption("notifier"),
                                fragments=tuple(pytestconfig.getoption("fragment")))
    # Written whole by a rename: under xdist every worker writes the same two files.
    write_text(run_dir.root / "kernel.config", prepared.build.config.read_text())
    write_text(run_dir.kernel_json, json.dumps({
        "tree": str(prepared.tree.path), "version": prepared.tree.version, "identity": prepared.tree.identity,
        "build_dir": str(prepared.build.dir), "release": prepared.build.release, "notifier": prepared.notifier,
        "fragments": list(prepared.fragments),
        "image": str(prepared.image.dir),
    }, indent=2) + "\n")
    earlier = json.loads(pytestconfig.getoption("prepared_timings") or "{}")
    run_dir.timings.prepare = {stage: round(s + earlier.get(stage, 0.0), 2) for stage, s in prepared.timings.items()}
    return prepared


def timeout_scale(prepared: Prepared, accel: str) -> float:
    """Debug kernels (KASAN, lockdep, ...) run several times slower; KVM much faster than TCG."""
    scale = 3.0 if any(prepared.build.has(opt) for opt in DEBUG_OPTIONS) else 1.0
    return scale * (0.5 if accel == "kvm" else 1.0)


class VMs:
    """Boots a VM on first need and replaces it when a test left it dead, crashed or suspect."""

    def __init__(self, prepared: Prepared, machine: str, run_dir: RunDir, boot_timeout: float | None,
                 extra_modules: str = "", worker: str = ""):
        self.prepared = prepared
        self.worker = worker  # xdist's worker id: its VMs are vm-gw0-1, ..., apart from another worker's
        self.profile = load_profile(machine)
        self.run_dir = run_dir
        self.modules = [m for m in ["mmu_probe" if prepared.build.has("MMU_NOTIFIER") else "",
                                    *extra_modules.split(",")] if m]
        self.accel = os.environ.get("HARNESS_ACCEL") or probe_accel(prepared.build.bzimage, prepared.image)
        self.scale = timeout_scale(prepared, self.accel)
        self.boot_timeout = boot_timeout or DEFAULT_BOOT_TIMEOUT * self.scale
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
                    self.run_dir.vm_dir(self.boots, self.worker), accel=self.accel, extra_append=append)
            try:
                vm.start(self.boot_timeout)
            except BootError as e:
                self.boot_error = e
                raise
            self.run_dir.timings.boots.append(Boot(self.boots, round(vm.boot_s, 2), self.accel, self.boot_timeout,
                                                    timeline=vm.timeline.to_json()))
            self.vm = vm
        return self.vm

    def discard(self) -> None:
        # Forget the VM before stopping it: the watchdog thread discards while the test it stopped may
        # already be over, and the next test's get() must not be handed a VM whose SSH is closing.
        vm, self.vm = self.vm, None
        if vm:
            vm.stop()

    def close(self) -> None:
        self.discard()


class Pools:
    """One VMs pool per machine profile: the session's (--machine) and any a test names with
    @pytest.mark.machine("numa2"); each other profile keeps its vm-N directories under <run>/<profile>/."""

    def __init__(self, prepared: Prepared, config: pytest.Config, run_dir: RunDir):
        self.prepared, self.config, self.run_dir = prepared, config, run_dir
        self.default = config.getoption("machine")
        self.pools: dict[str, VMs] = {}

    def pool(self, machine: str | None = None) -> VMs:
        machine = machine or self.default
        if machine not in self.pools:
            root = self.run_dir if machine == self.default else RunDir.make(self.run_dir.root / machine)
            self.pools[machine] = VMs(self.prepared, machine, root, self.config.getoption("boot_timeout"),
                                      self.config.getoption("guest_modules"), worker_id(self.config))
        return self.pools[machine]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        # Another profile's boots were recorded in its own RunDir: timings.json has them too, by profile.
        for machine, pool in self.pools.items():
            if pool.run_dir is not self.run_dir:
                self.run_dir.timings.boots += [replace(b, machine=machine) for b in pool.run_dir.timings.boots]


@pytest.fixture(scope="session")
def vms(kernel: Prepared, pytestconfig: pytest.Config, run_dir: RunDir) -> Iterator[Pools]:
    pools = Pools(kernel, pytestconfig, run_dir)
    try:
        yield pools
    finally:
        pools.close()


class Guest:
    """One test's view of the guest: commands, guest programs, the probe, its own dmesg and artifacts."""

    def __init__(self, vms: VMs, vm: VM, test_dir: Path, label: str):
        assert vm.ssh
        self.vms = vms
        self.vm = vm
        self.ssh = vm.ssh
        self.dir = test_dir
        self.dmesg = probe.Dmesg(vm.ssh, label)
        self.probe = probe.Probe(vm.ssh)
        self.timed_out: float | None = None  # the watchdog's limit, once it fired
        self.post_mortem: dict[str, str] = {}  # what a timeout left: registers, screen, where the CPUs were

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

    def collect_post_mortem(self) -> dict[str, str]:
        """A timed-out guest, before it is stopped: (QMP) its registers and screen, first, since an
        SSH attempt wakes the guest's network; then dmesg if SSH still answers. Bounded: a wedged
        guest costs a few seconds here."""
        self.post_mortem |= self.vm.post_mortem(self.dir)
        try:
            self.save("dmesg.txt", self.dmesg.since_mark(timeout=10))
            self.post_mortem["dmesg"] = str(self.dir / "dmesg.txt")
        except (SSHError, OSError, RuntimeError) as e:
            self.post_mortem["dmesg"] = f"not captured: {e}"
        qmp.save(self.post_mortem, self.dir)
        return self.post_mortem

    def check_after_test(self, allow: list[str]) -> None:
        """Raise the fault this test left behind: a dead or crashed guest, or splats in its dmesg."""
        vm, console = self.vm, self.vm.console
        assert console
        if console.log_error:  # a result whose log is lost cannot be explained: not a verdict on the kernel
            raise ResultsLost(console.log_error)
        if self.timed_out is not None:
            raise GuestTimeout(f"test exceeded its {self.timed_out:g} s watchdog; QEMU was stopped",
                               vm.console_log)
        if crash := faults.dead(vm):  # the one wording of every command (harness/vm/faults.py)
            self.vms.discard()
            raise crash
        try:
            log = self.dmesg.since_mark()
        except (SSHError, OSError) as e:
            self.vms.discard()
            raise GuestUnreachable(f"guest stopped answering: {e}", vm.console_log) from None
        self.save("dmesg.txt", log)
        splats = [s for s in find_splats(log) if not is_allowed(s, allow)]
        if splats:
            self.vms.discard()  # a WARN or worse leaves the kernel suspect for the tests after this one
            raise _splat_fault(splats, self.dir / "dmesg.txt")


class ResultsLost(HarnessFault):
    """The results directory stopped taking files (a full disk): the run stops at this test."""


def _splat_fault(splats: list[Splat], dmesg: Path) -> HarnessFault | AssertionError:
    titles = "; ".join(s.title for s in splats)
    text = f"kernel splat(s) during the test: {titles}\n  dmesg: {dmesg}\n\n{splats[0].text}"
    if any(s.kind in CRASH_KINDS for s in splats):
        return GuestCrash(text)
    return AssertionError(text)


@pytest.fixture
def guest(vms: Pools, run_dir: RunDir, request: pytest.FixtureRequest) -> Iterator[Guest]:
    machine = request.node.get_closest_marker("machine")
    pool = vms.pool(machine.args[0] if machine else None)
    boot_error: BootError | None = None
    try:
        vm = pool.get()
    except BootError as e:
        boot_error = e
    if boot_error:  # raised outside the except block, so that the report is the boot error alone
        raise boot_error
    test_dir = run_dir.test_dir(request.node.nodeid)
    test_dir.mkdir(parents=True, exist_ok=True)
    g = Guest(pool, vm, test_dir, request.node.nodeid)
    marker = request.node.get_closest_marker("test_timeout")
    limit = (marker.args[0] if marker else request.config.getoption("test_timeout") or DEFAULT_TEST_TIMEOUT)
    limit *= pool.scale
    watchdog = threading.Timer(limit, _expire, (g, limit))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield g
    finally:
        watchdog.cancel()


def _expire(g: Guest, limit: float) -> None:
    """The test watchdog: stop QEMU, which ends whatever the test was waiting on."""
    g.timed_out = limit
    try:
        g.collect_post_mortem()
    finally:  # whatever the post-mortem met, QEMU stops: that is what ends the test
        g.vms.discard()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After the test body, its guest's health is part of its verdict (not a teardown error)."""
    g = item.funcargs.get("guest") if hasattr(item, "funcargs") else None
    try:
        result = yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise  # Ctrl-C or SIGTERM (harness/vm/console.py): stop the run, don't call it a crash
        if isinstance(g, Guest):
            if g.timed_out is not None:
                g.check_after_test([])  # the watchdog explains the failure better than the symptom
            # The one classification of every command (harness/vm/faults.py): a dead QEMU or a crashed
            # kernel over a lost channel, then a command past its timeout, then an unreachable guest.
            fault = faults.explain(g.vm, e, keep=g.collect_post_mortem) or faults.dead(g.vm)
            if fault is not None and fault is not e:
                g.vms.discard()  # a crash, a wedged command or a lost session: the next test gets a fresh guest
                raise fault from None
        raise
    if isinstance(g, Guest):
        marker = item.get_closest_marker("allow_splats")
        g.check_after_test(list(marker.args) if marker else [])
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome, reason = classify(report, call)
        # On the item: pytest's JUnit writes a case's properties from its teardown report, which copies
        # the item's list; one appended to this report alone never reached junit.xml.
        item.user_properties.append(("outcome", outcome.value))
        g = item.funcargs.get("guest") if hasattr(item, "funcargs") else None
        console = str(g.vm.console_log) if isinstance(g, Guest) else None
        dmesg = str(g.dir / "dmesg.txt") if isinstance(g, Guest) and (g.dir / "dmesg.txt").exists() else None
        post_mortem = g.post_mortem if isinstance(g, Guest) and outcome == Outcome.TIMEOUT else {}
        if call.excinfo and _is_results_lost(call.excinfo.value):
            item.session.shouldstop = f"results can no longer be written: {reason}"
        result = Result(report.nodeid, outcome, reason, round(report.duration, 3), console, dmesg,
                        {"post_mortem": post_mortem} if post_mortem else {})
        # On the report, as JSON: under xdist it reaches the controller's pytest_runtest_logreport with it.
        setattr(report, REPORT_RESULT, result.to_json())
    return report


class ResultCollector:
    """Every test's Result, where the session's results are written: the one process of a run without
    xdist, or xdist's controller, which receives each worker's reports."""

    def __init__(self, results: list[Result]):
        self.results = results

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_RESULT, None)
        if data is not None:
            self.results.append(Result.from_json(data))


def classify(report: pytest.TestReport, call: pytest.CallInfo[None]) -> tuple[Outcome, str]:
    if report.passed:
        return Outcome.PASS, ""
    if report.skipped and hasattr(report, "wasxfail"):  # an expected failure, e.g. a known kernel bug
        return Outcome.XFAIL, report.wasxfail
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return Outcome.SKIP, reason.removeprefix("Skipped: ")
    exc = call.excinfo.value if call.excinfo else None
    first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    if isinstance(exc, HarnessFault):
        return exc.outcome, first_line
    if isinstance(exc, CommandTimeout):
        return Outcome.TIMEOUT, first_line
    if isinstance(exc, CommandFlooded):  # one not seen by harness/vm/faults.py (a fixture's)
        return Outcome.FLOOD, first_line
    if isinstance(exc, CommandFailed):  # the guest answered, and the answer was wrong: the test's verdict
        return (Outcome.FAIL if report.when == "call" else Outcome.ERROR), first_line
    if isinstance(exc, SSHError):
        return Outcome.INFRA, first_line
    if isinstance(exc, (AssertionError, pytest.fail.Exception)):
        return (Outcome.FAIL if report.when == "call" else Outcome.ERROR), first_line
    return Outcome.ERROR, f"{type(exc).__name__}: {first_line}" if exc is not None else "unknown error"


def _is_results_lost(exc: BaseException) -> bool:
    return isinstance(exc, ResultsLost) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    """outcomes.json (written whole or not at all), then JUnit: pytest's junitxml writes it in place,
    so a write that fails (a full disk) removes what it left rather than leave a truncated report."""
    config = session.config
    rd = config.stash.get(RUN_DIR, None)
    control = config.stash.get(CONTROL, None)
    if rd is None and control is not None and control.run_dir_used():  # xdist's controller
        rd = RunDir(config.stash[RUN_PATH])
    if rd is not None and not worker_id(config):
        try:
            write_results(rd.outcomes, config.stash[RESULTS])
        except OSError as e:
            _results_not_written(session, rd.outcomes, e)
    try:
        return (yield)
    except OSError as e:
        if not session.config.option.xmlpath:  # not JUnit's write: nothing of ours to clean up
            raise
        junit = Path(session.config.option.xmlpath)
        junit.unlink(missing_ok=True)
        _results_not_written(session, junit, e)
    finally:
        # After xdist's own sessionfinish, which waits for its workers to end (or kills them).
        if rd is not None and control is not None and not worker_id(config):
            rd.timings = Timings.merge(control.read_timings())
            rd.save_timings()


def _results_not_written(session: pytest.Session, path: Path, e: OSError) -> None:
    print(f"\nharness: {path} was not written: {e.strerror}", file=sys.stderr)
    session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


@pytest.fixture(autouse=True)
def _kernel_requirements(request: pytest.FixtureRequest) -> None:
    """`needs_notifier` tests are skipped, with the reason, on a kernel without CONFIG_MMU_NOTIFIER."""
    if request.node.get_closest_marker("needs_notifier"):
        prepared: Prepared = request.getfixturevalue("kernel")
        if not prepared.build.has("MMU_NOTIFIER"):
            pytest.skip("CONFIG_MMU_NOTIFIER is not set in this kernel")


# -- the closing summary: one line per test that did not pass ------------------------------------------

# pytest's category in terminalreporter.stats -> the outcome, where the plugin recorded none
_CATEGORY_OUTCOME = {"failed": Outcome.FAIL, "error": Outcome.ERROR, "xfailed": Outcome.XFAIL,
                     "skipped": Outcome.SKIP}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Replaces pytest's short test summary, which prints a known kernel bug's whole reason (hundreds of
    characters) for every test it covers: here each test that did not pass is one line, its outcome, id and
    the first line of its reason cut to the terminal's width; every reason is whole in outcomes.json and
    junit.xml. Built from the reports pytest collected, so it also lists what other processes ran."""
    terminalreporter.reportchars = ""  # pytest's own short summary, printed after this hook: not twice
    recorded = {rep.nodeid: value for reports in terminalreporter.stats.values() for rep in reports
                for name, value in getattr(rep, "user_properties", ()) if name == "outcome"}
    rows: list[tuple[str, str, str]] = []
    for category, outcome in _CATEGORY_OUTCOME.items():
        for rep in terminalreporter.stats.get(category, ()):
            if not isinstance(rep, pytest.TestReport):  # a collection error: pytest's errors section shows it
                rows.append((Outcome.ERROR, str(getattr(rep, "nodeid", "") or "collection"),
                             _first_line_of(getattr(rep, "longreprtext", "") or "")))
                continue
            rows.append((recorded.get(rep.nodeid, outcome), rep.nodeid, _short_reason(rep)))
    if not rows:
        return
    run = config.stash.get(RUN_PATH, None)
    where = [str(p) for p in (run / "outcomes.json" if run else None, config.option.xmlpath) if p and Path(p).exists()]
    terminalreporter.write_sep("=", f"{len(rows)} not passed" + (f" (whole reasons: {', '.join(where)})"
                                                                  if where else ""))
    width = max(terminalreporter._tw.fullwidth, 80)
    for shown, nodeid, reason in sorted(rows, key=lambda r: (SEVERITY_RANK.get(r[0], 0), r[1])):
        line = f"{shown} {nodeid}: {reason}" if reason else f"{shown} {nodeid}"
        terminalreporter.write_line(line if len(line) <= width else line[:width - 1] + "…")


def _short_reason(rep: pytest.TestReport) -> str:
    if hasattr(rep, "wasxfail"):
        return _first_line_of(rep.wasxfail)
    longrepr = rep.longrepr
    if rep.skipped and isinstance(longrepr, tuple):
        return _first_line_of(str(longrepr[2]).removeprefix("Skipped: "))
    crash = getattr(longrepr, "reprcrash", None)
    return _first_line_of(crash.message if crash is not None else str(longrepr or ""))


def _first_line_of(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


SEVERITY_RANK = {o.value: i for i, o in enumerate(SEVERITY)}
