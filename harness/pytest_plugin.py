"""pytest plugin: suites get a prepared kernel, a booted VM shared by many tests, and a guest session.

This module is the plugin's fixtures and hooks only; what they use lives where it belongs: the `Guest`
that suites use (harness/guest.py, the public test API), the VM pools (harness/vm/pool.py), a test's
classification into an outcome (harness/classify.py), the xdist control folder
(harness/parallel.py) and the kernel `harness run` hands over (harness/session.py).

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

import contextlib
import json
import os
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from _pytest.runner import call_and_report

from harness import paths, session
from harness.atomic import OutputDirError, check_output_dir, write_text
from harness.classify import SEVERITY_RANK, classify, first_line_of, is_results_lost, short_reason
from harness.guest import Guest
from harness.kernel.arch import HOST, known_arches
from harness.kernel.build import has_two_pass_notifier
from harness.kernel.prepare import Prepared, prepare
from harness.observe import vmcore as observed_vmcore
from harness.parallel import Control
from harness.results.junit import drop_unfinished
from harness.results.model import Result, Timings, write_results
from harness.results.outcome import Outcome
from harness.results.rundir import RunDir, new_run_dir, point_latest
from harness.vm import faults, vmcore
from harness.vm.machine import BootError
from harness.vm.pool import DEFAULT_TEST_TIMEOUT, Pools, isolation

RESULTS = pytest.StashKey[list[Result]]()
RUN_DIR = pytest.StashKey[RunDir]()
RUN_PATH = pytest.StashKey[Path]()
CLAIMED = pytest.StashKey[bool]()  # RUN_PATH was made by this session (not given): removed if left unused
CONTROL = pytest.StashKey[Control]()  # under xdist: what the controller and its workers share

# How the run directory and each test's Result travel from xdist's controller to its workers and back.
WORKERINPUT_RUN_DIR = "harness_run_dir"
WORKERINPUT_CONTROL = "harness_control"
REPORT_RESULT = "harness_result"  # a TestReport attribute: xdist serialises a report's __dict__
FAILED_ATTEMPTS = pytest.StashKey[list[Result]]()  # a test's attempts that did not pass, while it is run again
FRESH_GUEST = pytest.StashKey[bool]()  # this attempt failed and another follows: its guest is not reused


def worker_id(config: pytest.Config) -> str:
    """This process's xdist worker id (gw0, gw1, ...); "" in a run without xdist and on its controller."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else ""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "kernel under test")
    group.addoption("--kernel-src", default=os.environ.get("KSRC") or None,
                    help="kernel tree: a path, debian:6.1, or empty for Debian's linux-source-6.12 (env KSRC)")
    group.addoption("--notifier", default="on", choices=["on", "off"], help="the CONFIG_MMU_NOTIFIER axis")
    group.addoption("--arch", default=HOST, choices=known_arches(),
                    help="the guest's architecture (configs/arches/)")
    group.addoption("--fragment", action="append", default=[], metavar="NAME",
                    help="an extra config fragment: configs/fragments/NAME.config (e.g. debug/kasan) or a path")
    group.addoption("--machine", default=os.environ.get("MACHINE", "default"), help="configs/machines/NAME.yaml")
    group.addoption("--results-dir", default=None,
                    help="where this run's results go, JUnit XML too (default: results/<time>, without JUnit)")
    group.addoption("--boot-timeout", type=float, default=None, help="seconds to the ready marker")
    group.addoption("--test-timeout", type=float, default=None, help="seconds a test may take with its guest")
    group.addoption("--fuzz-time", type=float, default=os.environ.get("HARNESS_FUZZ_TIME") or None, metavar="S",
                    help="seconds suites/test_fuzz.py fuzzes for (default 120; env HARNESS_FUZZ_TIME)")
    group.addoption("--race-seconds", type=int, default=os.environ.get("HARNESS_RACE_SECONDS") or None, metavar="S",
                    help="the most a race of suites/test_races.py runs (default race.c's 12 s; `make run`: 4; env "
                         "HARNESS_RACE_SECONDS)")
    group.addoption("--reruns", type=int, default=1, metavar="N",
                    help="a test with a guest that does not pass runs again, up to N times, each time on a fresh "
                         "guest; one that then passes is FLAKY (default 1; 0: never)")
    group.addoption("--gdb-on-crash", action="store_true",
                    help="every guest with QEMU's gdb stub, held in its panic (panic=0): at a crash the command that "
                         "attaches gdb is printed and the run waits for Enter on the terminal")
    group.addoption("--fresh-guest", action="store_true",
                    help="every test on a guest no other test used: restored from the snapshot taken right after "
                         "the first boot (about 0.2 s a test), as @pytest.mark.fresh_guest gives one test")
    group.addoption("--guest-modules", default="",
                    help="comma-separated guest/ modules to load at boot, e.g. fault_panic (fault injection)")


@pytest.hookimpl(tryfirst=True)  # before junitxml's own configure reads xmlpath
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_splats(*regexes): kernel splat titles this test tolerates")
    config.addinivalue_line("markers", "test_timeout(seconds): this test's watchdog, before scaling")
    config.addinivalue_line("markers", "machine(profile): boot this test's guest from configs/machines/PROFILE.yaml")
    config.addinivalue_line("markers", "needs_notifier: the test needs CONFIG_MMU_NOTIFIER=y in the kernel under test")
    config.addinivalue_line("markers", "needs_two_pass: the test needs the two-pass interval notifier (7.x)")
    config.addinivalue_line("markers", "arches(*names, why=...): the architectures the test is proven on")
    config.addinivalue_line("markers", "fresh_guest(scope='test'): a guest no test outside this one (scope='module': "
                                       "this module) used, left to no test outside it: it changes global state")
    config.stash[RESULTS] = []
    if wid := worker_id(config):  # an xdist worker writes into the directory its controller chose and checked
        workerinput = config.workerinput  # type: ignore[attr-defined]
        config.stash[RUN_PATH] = Path(workerinput[WORKERINPUT_RUN_DIR])
        config.stash[CONTROL] = Control(Path(workerinput[WORKERINPUT_CONTROL]), wid)
        config.pluginmanager.register(config.stash[CONTROL], "harness-control")
        config.stash[CONTROL].worker_started()
        return
    config.pluginmanager.register(ResultCollector(config.stash[RESULTS]), "harness-results")
    # One results directory per run, made by the first test that uses run_dir (or, under xdist, when the
    # controller starts its workers: _run_path). This plugin loads in every pytest of the environment: only
    # a session that names its directory (harness run, the matrix's cells) gets it checked now and JUnit
    # XML written into it; any other writes JUnit only on --junitxml.
    given = config.getoption("results_dir")
    if given:
        config.stash[RUN_PATH] = Path(given)
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
    node.workerinput[WORKERINPUT_RUN_DIR] = str(_run_path(config))  # type: ignore[attr-defined]
    node.workerinput[WORKERINPUT_CONTROL] = str(config.stash[CONTROL].folder)  # type: ignore[attr-defined]
    if (handoff := config.pluginmanager.get_plugin(session.PLUGIN_NAME)) is not None:  # the run's one kernel
        node.workerinput[session.WORKERINPUT_KEY] = json.dumps(session.to_json(handoff.prepared))  # type: ignore[attr-defined]


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
    if worker_id(config):
        return
    control = config.stash.get(CONTROL, None)
    used = RUN_DIR in config.stash or (control is not None and control.run_dir_used())
    if config.stash.get(CLAIMED, False) and not used:  # claimed for xdist's workers, and no test wrote in it
        with contextlib.suppress(OSError):
            config.stash[RUN_PATH].rmdir()
    if control is not None:
        control.remove()


def _run_path(config: pytest.Config) -> Path:
    """This session's results directory: the one it was given, else a new results/<time>[-N], claimed
    (made) here once, so that no other run, started in the same second or at the same time, shares it."""
    if RUN_PATH not in config.stash:
        config.stash[RUN_PATH] = new_run_dir()
        config.stash[CLAIMED] = True
    return config.stash[RUN_PATH]


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config) -> Iterator[RunDir]:
    rd = RunDir.make(_run_path(pytestconfig))
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
    """The kernel build and image for this session: the one `harness run` prepared and handed over
    (harness/session.py), or, in a plain pytest session, built on first use (cached by content)."""
    prepared = _handed_over(pytestconfig) or prepare(pytestconfig.getoption("kernel_src"),
                                                     pytestconfig.getoption("notifier"),
                                                     fragments=tuple(pytestconfig.getoption("fragment")),
                                                     arch=pytestconfig.getoption("arch"))
    # Written whole by a rename: under xdist every worker writes the same two files.
    write_text(run_dir.root / "kernel.config", prepared.build.config.read_text())
    write_text(run_dir.kernel_json, json.dumps({
        "tree": str(prepared.tree.path), "version": prepared.tree.version, "identity": prepared.tree.identity,
        "build_dir": str(prepared.build.dir), "release": prepared.build.release, "notifier": prepared.notifier,
        "fragments": list(prepared.fragments), "arch": prepared.build.arch.name, "image": str(prepared.image.dir),
    }, indent=2) + "\n")
    run_dir.timings.prepare = {stage: round(s, 2) for stage, s in prepared.timings.items()}
    return prepared


def _handed_over(config: pytest.Config) -> Prepared | None:
    """The Prepared of `harness run`: its plugin object in this process, or (an xdist worker) its reference."""
    if (handoff := config.pluginmanager.get_plugin(session.PLUGIN_NAME)) is not None:
        return handoff.prepared  # type: ignore[no-any-return]
    reference = getattr(config, "workerinput", {}).get(session.WORKERINPUT_KEY)
    return session.from_json(json.loads(reference)) if reference else None


@pytest.fixture(scope="session")
def vms(kernel: Prepared, pytestconfig: pytest.Config, run_dir: RunDir) -> Iterator[Pools]:
    pools = Pools(kernel, run_dir, pytestconfig.getoption("machine"), pytestconfig.getoption("boot_timeout"),
                  pytestconfig.getoption("guest_modules"), worker_id(pytestconfig),
                  pytestconfig.getoption("gdb_on_crash"))
    try:
        yield pools
    finally:
        pools.close()


@pytest.fixture
def guest(vms: Pools, run_dir: RunDir, request: pytest.FixtureRequest) -> Iterator[Guest]:
    machine = request.node.get_closest_marker("machine")
    pool = vms.pool(machine.args[0] if machine else None)
    boot_error: BootError | None = None
    marker = request.node.get_closest_marker("fresh_guest")
    scope = marker.kwargs.get("scope", "test") if marker else None
    try:
        vm = pool.get(isolation(request.node.nodeid, scope, request.config.getoption("fresh_guest")))
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
        if request.node.stash.get(FRESH_GUEST, False):  # run again: on a guest this attempt never touched
            g.vms.discard()


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
                if fault.outcome == Outcome.CRASH and item.config.getoption("gdb_on_crash"):
                    g.hold_for_gdb(f"{item.nodeid}: {fault}")
                g.vms.discard()  # a crash, a wedged command or a lost session: the next test gets a fresh guest
                raise fault from None
        raise
    if isinstance(g, Guest):
        marker = item.get_closest_marker("allow_splats")
        g.check_after_test(list(marker.args) if marker else [])
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """A test with a guest that does not pass runs again, each time on a fresh guest, up to --reruns times (as
    NIPA retries once): fail then pass is FLAKY (pytest_runtest_makereport); only the last attempt is
    reported, with the failed ones in its Result's extra["attempts"]. Other tests run as pytest runs them."""
    config = item.config
    reruns = int(config.getoption("reruns", 0) or 0)
    if reruns <= 0 or "guest" not in getattr(item, "fixturenames", ()) or config.getoption("setuponly", False) \
            or config.getoption("setupshow", False):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.stash[FAILED_ATTEMPTS] = []
    for attempt in range(reruns + 1):
        item.stash[FRESH_GUEST] = False
        reports, again = _attempt(item, nextitem, may_rerun=attempt < reruns)
        if not again:
            break
        failed = next(r for r in reports if r.failed)
        item.stash[FAILED_ATTEMPTS].append(Result.from_json(getattr(failed, REPORT_RESULT)))
        item.user_properties[:] = [p for p in item.user_properties if p[0] != "outcome"]
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _attempt(item: pytest.Item, nextitem: pytest.Item | None, may_rerun: bool) -> tuple[list[pytest.TestReport], bool]:
    """One run of the test, setup, call and teardown, as pytest's runtestprotocol does it; except that one that
    did not pass and will run again tears down only its own fixtures (its parent is what comes next), so that
    the session's (its VMs, the run directory) live on, as between two tests. Returns its reports and whether
    it runs again."""
    if hasattr(item, "_request") and not item._request:
        item._initrequest()  # type: ignore[attr-defined]  # a new fixture request for a test run again
    try:
        reports = [call_and_report(item, "setup", log=False)]
        if reports[0].passed:
            reports.append(call_and_report(item, "call", log=False))
        stopping = bool(item.session.shouldfail or item.session.shouldstop)
        again = may_rerun and not stopping and item.stash.get(FRESH_GUEST, False)  # set by makereport
        upto = item.parent if again else (None if stopping else nextitem)
        reports.append(call_and_report(item, "teardown", log=False, nextitem=upto))  # type: ignore[arg-type]
    finally:
        if hasattr(item, "_request"):
            item._request = False
            item.funcargs = None  # type: ignore[attr-defined]
    return reports, again


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome, reason = classify(report, call)
        earlier = item.stash.get(FAILED_ATTEMPTS, [])
        # Another attempt follows (pytest_runtest_protocol), unless the guest never booted: its pool keeps the
        # boot's error for the session (harness/vm/pool.py), so an attempt more would only repeat it
        if report.failed and len(earlier) < int(item.config.getoption("reruns", 0) or 0) \
                and not (call.excinfo and isinstance(call.excinfo.value, BootError)):
            item.stash[FRESH_GUEST] = True
        if earlier and outcome == Outcome.PASS:
            first = earlier[0]
            outcome, reason = Outcome.FLAKY, (f"{first.outcome.value} on attempt 1 of {len(earlier) + 1}, then "
                                              f"passed on a fresh guest: {first.reason}")
        # On the item: pytest's JUnit writes a case's properties from its teardown report, which copies
        # the item's list; one appended to this report alone never reached junit.xml.
        item.user_properties.append(("outcome", outcome.value))
        g = item.funcargs.get("guest") if hasattr(item, "funcargs") else None
        console = str(g.vm.console_log) if isinstance(g, Guest) else None
        dmesg = str(g.dir / "dmesg.txt") if isinstance(g, Guest) and (g.dir / "dmesg.txt").exists() else None
        post_mortem = g.post_mortem if isinstance(g, Guest) and outcome == Outcome.TIMEOUT else {}
        if call.excinfo and is_results_lost(call.excinfo.value):
            item.session.shouldstop = f"results can no longer be written: {reason}"
        extra: dict[str, dict[str, str]] = {"post_mortem": post_mortem} if post_mortem else {}
        if isinstance(g, Guest) and outcome in (Outcome.CRASH, Outcome.TIMEOUT) and (
                core := g.vm.workdir / vmcore.VMCORE).exists():
            extra["vmcore"] = observed_vmcore.summary(core)  # the dump a crash or a hang left, analysed
        if earlier:  # each failed attempt's outcome and reason, by attempt
            extra["attempts"] = {str(n): f"{r.outcome.value}: {r.reason}" for n, r in enumerate(earlier, 1)}
        result = Result(report.nodeid, outcome, reason, round(report.duration, 3), console, dmesg, extra)
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
        result = yield
        if session.config.option.xmlpath and not worker_id(config):  # a stopped run: its last test, nameless
            drop_unfinished(Path(session.config.option.xmlpath))
        return result
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
    """`needs_notifier` tests are skipped, with the reason, on a kernel without CONFIG_MMU_NOTIFIER, `needs_two_pass`
    ones on a tree whose interval notifier has one pass (what the probe was built with), `arches` ones elsewhere."""
    if (arches := request.node.get_closest_marker("arches")) and \
            (arch := request.getfixturevalue("kernel").build.arch.name) not in arches.args:
        pytest.skip(f"proven on {', '.join(arches.args)}, not {arch}: {arches.kwargs['why']}")
    if request.node.get_closest_marker("needs_notifier"):
        prepared: Prepared = request.getfixturevalue("kernel")
        if not prepared.build.has("MMU_NOTIFIER"):
            pytest.skip("CONFIG_MMU_NOTIFIER is not set in this kernel")
    if request.node.get_closest_marker("needs_two_pass"):
        tree = request.getfixturevalue("kernel").build.tree.path
        if not has_two_pass_notifier((tree / "include/linux/mmu_notifier.h").read_text()):
            pytest.skip("this kernel's interval notifier has one pass (invalidate_start/finish came in 7.x)")


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
                             first_line_of(getattr(rep, "longreprtext", "") or "")))
                continue
            rows.append((recorded.get(rep.nodeid, outcome), rep.nodeid, short_reason(rep)))
    for rep in terminalreporter.stats.get("passed", ()):  # pytest's pass, the harness's FLAKY: failed once
        if recorded.get(rep.nodeid) == Outcome.FLAKY:
            rows.append((Outcome.FLAKY, rep.nodeid, first_line_of(getattr(rep, REPORT_RESULT, {}).get("reason", ""))))
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



