"""Real drivers under test: their profiles (configs/drivers/NAME.yaml) and what their suites share in the guest.

A profile says what a driver needs and who tests it:

    description: ...
    fragments: [base.config, drivers.config]   # configs/fragments/ the kernel needs for it
    config: [TEST_HMM]                          # symbols that must be y or m in the build, else its tests skip
    machine: default                            # configs/machines/ profile (devices, CPU model) of each arch
    arches: [x86_64, arm64]                     # where its suites are proven (default: x86_64 alone)
    module: test_hmm                            # module to load (none: built in), or a list, the driver's last
    device: /dev/hmm_dmirror0                   # what exists once the driver is up
    suites: [suites/test_hmm.py]
    programs:                                   # selftest programs the suite runs (mm-selftests), each a
      - mremap_test                             #   program of the tree, or a mapping: program, args,
      - {id: ksm-unmerge, program: ksm_tests, args: [-U], timeout: 120}   # id (the test's), timeout (s),
      - {program: cow, needs: [swap]}           #   needs (guest setups of harness/checks/workloads.py)
    known_failures:                             # kernel bugs the tests find: reported as xfail, with why
      - tests: ["hmm.*.exclusive"]              # fnmatch patterns over kernel test or pytest test names
        series: ["6.12"]                        # kernel series it applies to (none: all)
        thp: always                             # only when the guest's THP mode is this
        code: {file: mm/rmap.c, contains: "if (PageTail(pages[i]) ||"}  # only when the tree under test has
                                                #   the faulty code: text (any whitespace) in a file of the tree
        without: [USERFAULTFD]                  # only on a kernel that lacks these symbols (a test that needs them)
        reason: ...

A `code` condition ties the xfail to the kernel code that causes it, not to a list of versions: any tree with
that code gets it (6.1 and 6.12 alike), and a tree that fixed it does not, so the test must pass there.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import paths, schema
from harness.checks import workloads as setups
from harness.errors import UserError
from harness.kernel.arch import HOST, known_arches
from harness.kernel.build import KernelBuild
from harness.kernel.prepare import Prepared
from harness.kernel.userprogs import CompileError, SelftestMissing
from harness.observe import ktap
from harness.results.splat import strip_prefix
from harness.vm.ssh import SSH

if TYPE_CHECKING:
    from harness.guest import Guest

DRIVERS = paths.CONFIGS / "drivers"
GUEST_BIN = "/guest/bin"
GUEST_MODULES = "/guest/modules"  # the modules of guest/ an image carries (harness/kernel/image.py)


class DriverError(UserError):
    """A driver profile that is missing or malformed."""


@dataclass(frozen=True)
class KnownFailure:
    tests: tuple[str, ...]
    reason: str
    series: tuple[str, ...] = ()
    thp: str | None = None
    code: tuple[str, str] | None = None  # (file in the tree, text it must contain)
    without: tuple[str, ...] = ()  # config symbols the kernel must lack

    def applies(self, test: str, series: str, thp: str | None, tree: Path | None = None,
                has: Callable[[str], bool] | None = None) -> bool:
        return (any(fnmatch.fnmatchcase(test, pattern) for pattern in self.tests)
                and (not self.series or series in self.series) and (self.thp is None or self.thp == thp)
                and (self.code is None or (tree is not None and tree_contains(tree, *self.code)))
                and (not self.without or (has is not None and not any(map(has, self.without)))))


def tree_contains(tree: Path, file: str, text: str) -> bool:
    """Whether the tree's `file` contains `text`, any run of whitespace in either matching any other."""
    path = tree / file
    return path.is_file() and " ".join(text.split()) in " ".join(path.read_text(errors="replace").split())


@dataclass(frozen=True)
class SelftestRun:
    """One run of one of the tree's selftest programs in the guest: a test of its own."""
    id: str  # the test's id: the program's name unless the profile names the run
    program: str
    args: tuple[str, ...] = ()
    timeout: float = 300  # seconds under TCG, before the kernel's timeout scale
    needs: tuple[str, ...] = ()  # guest setups first (harness/checks/workloads.py: swap, ksm, numa, ...)


@dataclass(frozen=True)
class DriverProfile:
    name: str
    description: str
    fragments: tuple[str, ...]
    config: tuple[str, ...]
    machine: str
    module: str | None  # the driver's own module (the last of `modules`)
    device: str | None
    suites: tuple[str, ...]
    known_failures: tuple[KnownFailure, ...] = ()
    programs: tuple[SelftestRun, ...] = ()
    kernel_test_patterns: tuple[tuple[str, str], ...] = ()  # (FIXTURE.VARIANT.TEST, where): checked vs the tree
    modules: tuple[str, ...] = ()  # every module to load, in order: the guest's own (/guest/modules) or the kernel's
    arches: tuple[str, ...] = (HOST,)  # the architectures its suites are proven on

    def known_failure(self, test: str, series: str, thp: str | None = None, tree: Path | None = None,
                      has: Callable[[str], bool] | None = None) -> str | None:
        """Why `test` is expected to fail on this kernel series, THP mode, tree (for `code`) and config (`has`
        for `without`), or None."""
        return next((k.reason for k in self.known_failures if k.applies(test, series, thp, tree, has)), None)


_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"  # a file, program or module name: no path, no option, nothing a shell reads
_REL_PATH = r"(?!/)(?!(.*/)?\.\.(/|$))[\w.+/-]+"  # relative, never out of its folder
_NOT_BARE = r"(?:\[[^\]]*\]|[^\w\[])*\w.*"  # a letter, digit or _ outside any [class]: not *, ?*, [a-z]*
_SYMBOL = schema.Str(r"[A-Z0-9_]+", "a config symbol without CONFIG_ (TEST_HMM)")
_NEEDS = schema.ListOf(schema.Enum(setups.setup_names, "a guest setup of harness/checks/workloads.py:"))
_RUN = schema.Record({
    "program": schema.required(schema.Str(_NAME, "a program name"), "the tree's selftest program"),
    "id": schema.optional(schema.Str(_NAME, "a test id"), None, "the test's id (default: the program's name)"),
    "args": schema.optional(schema.ListOf(schema.Str(nonempty=False)), [], "its arguments"),
    "timeout": schema.optional(schema.Number(positive=True), 300.0, "seconds under TCG"),
    "needs": schema.optional(_NEEDS, [], "guest setups first"),
}, "a program run")
_KNOWN = schema.Record({
    "tests": schema.required(schema.ListOf(schema.Str(_NOT_BARE, "a test-name pattern with a word in it (not a "
                                                          "bare wildcard)"), one_or_more=True),
                             "fnmatch patterns, each naming a test of the driver's suites (above)"),
    "reason": schema.required(schema.Str(), "why it fails, with the kernel code that causes it"),
    "series": schema.optional(schema.ListOf(schema.Str(r"\d+\.\d+", 'a kernel series "X.Y" (quoted)')), [],
                              "kernel series it applies to (none: all)"),
    "thp": schema.optional(schema.Enum(("always", "madvise", "never")), None,
                           "only when the guest's THP mode is this"),
    "code": schema.optional(schema.Record({
        "file": schema.required(schema.Str(_REL_PATH, "a path inside the tree"), "a file of the tree"),
        "contains": schema.required(schema.Str(), "text in it (runs of whitespace match any whitespace)"),
    }, "a code condition"), None, "only when the tree under test has the faulty code"),
    "without": schema.optional(schema.ListOf(_SYMBOL), [], "only on a kernel that lacks these symbols"),
}, "a known failure")
PROFILE = schema.Record({
    "description": schema.optional(schema.Str(), "", "what the driver is"),
    "fragments": schema.optional(schema.ListOf(schema.Str(_NAME, "a file name in configs/fragments/")), [],
                                 "config fragments the kernel needs for it"),
    "config": schema.optional(schema.ListOf(_SYMBOL), [], "symbols that must be y or m, else its tests skip"),
    "machine": schema.required(schema.Str(_NAME, "a machine profile name"),
                               "configs/machines/ profile (of each architecture: configs/machines/ARCH/)"),
    "arches": schema.optional(schema.ListOf(schema.Enum(known_arches, "an architecture:"), one_or_more=True), [HOST],
                              "the architectures (configs/arches/) its suites are proven on; another is refused"),
    "module": schema.optional(schema.Either((schema.Str(_NAME, "a module name"), schema.Null(),
                                             schema.ListOf(schema.Str(_NAME, "a module name"), one_or_more=True))),
                              None,
                              "module to load in the guest (null: built in), or modules loaded in order, the "
                              "driver's own last"),
    "device": schema.optional(schema.Either((schema.Str(r"/\S+", "an absolute path in the guest"), schema.Null())),
                              None, "what exists once the driver is up"),
    "suites": schema.required(schema.ListOf(schema.Str(_REL_PATH, "a path in the repository"), one_or_more=True),
                              "the pytest suites that test it"),
    "programs": schema.optional(schema.ListOf(schema.Either((schema.Str(_NAME, "a program name"), _RUN))), [],
                                "selftest programs the suite runs, each a name or a run"),
    "known_failures": schema.optional(schema.ListOf(_KNOWN), [], "kernel bugs its tests find: xfail, with why"),
}, "a driver profile")


def known_drivers() -> list[str]:
    return sorted(p.stem for p in DRIVERS.glob("*.yaml"))


def load_driver(name: str) -> DriverProfile:
    doc = schema.load_named(DRIVERS, name, "driver", PROFILE, DriverError)
    data = doc.data
    programs = tuple(_selftest_run(r) for r in data["programs"])
    ids = [r.id for r in programs]
    if dup := next((i for i in ids if ids.count(i) > 1), None):
        raise DriverError(f"{doc.where(('programs', ids.index(dup, ids.index(dup) + 1)))}: programs need distinct "
                          f"ids, and {dup!r} is given twice")
    for n, frag in enumerate(data["fragments"]):
        if not (paths.CONFIGS / "fragments" / frag).exists():
            raise DriverError(f"{doc.where(('fragments', n))}: fragment {frag} is not in configs/fragments/")
    for arch in data["arches"]:
        folder = paths.CONFIGS / "machines" / ("" if arch == HOST else arch)
        if not (folder / f"{data['machine']}.yaml").exists():
            raise DriverError(f"{doc.where(('machine',))}: machine profile {data['machine']} is not in "
                              f"{folder.relative_to(paths.REPO)}/ (for {arch}, one of its arches)")
    for n, suite in enumerate(data["suites"]):
        if not (paths.REPO / suite).is_file():
            raise DriverError(f"{doc.where(('suites', n))}: suite {suite} does not exist")
    modules = tuple(data["module"]) if isinstance(data["module"], list) else (data["module"],) * bool(data["module"])
    return DriverProfile(
        name=doc.path.stem if name.endswith((".yaml", ".yml")) else name, description=data["description"],
        fragments=tuple(data["fragments"]), config=tuple(data["config"]), machine=data["machine"],
        module=modules[-1] if modules else None, device=data["device"], suites=tuple(data["suites"]),
        known_failures=tuple(_known_failure(k) for k in data["known_failures"]), programs=programs,
        kernel_test_patterns=_unresolved_patterns(doc, programs), modules=modules, arches=tuple(data["arches"]))


def _known_failure(entry: dict) -> KnownFailure:
    code = entry["code"]
    return KnownFailure(tests=tuple(entry["tests"]), reason=" ".join(entry["reason"].split()),
                        series=tuple(entry["series"]), thp=entry["thp"],
                        code=(code["file"], code["contains"]) if code else None, without=tuple(entry["without"]))


def _selftest_run(entry: str | dict) -> SelftestRun:
    if isinstance(entry, str):
        return SelftestRun(id=entry, program=entry)
    return SelftestRun(id=entry["id"] or entry["program"], program=entry["program"], args=tuple(entry["args"]),
                       timeout=entry["timeout"], needs=tuple(entry["needs"]))


# --- what a known failure's pattern may name ----------------------------------------------------------------

_KSELFTEST_NAME = re.compile(r"[^\s.:]+(\.[^\s.:]+){1,2}")  # kselftest_harness.h: FIXTURE[.VARIANT].TEST


@functools.cache
def suite_names(suite: Path) -> frozenset[str]:
    """The names a suite's tests go by without a kernel tree: its test functions, and the names it asks
    `known_failure` about in so many words (rxe's "odp-copy")."""
    tree = ast.parse(suite.read_text(), str(suite))
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}
    names |= {c.args[0].value for c in ast.walk(tree)
              if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "known_failure"
              and c.args and isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str)}
    return frozenset(names)


def _names_statically(pattern: str, names: Iterable[str], programs: tuple[SelftestRun, ...]) -> bool:
    """Whether `pattern` names a test function or a name of the suites, or a program run ("ID" or "ID: SUBTEST",
    the subtest being known only when the program runs)."""
    run_part = pattern.split(": ", 1)[0]
    return (any(fnmatch.fnmatchcase(n, pattern) for n in names)
            or any(fnmatch.fnmatchcase(r.id, run_part) for r in programs))


def _unresolved_patterns(doc: schema.Document, programs: tuple[SelftestRun, ...]) -> tuple[tuple[str, str], ...]:
    """Each pattern must name a test of the driver's suites. Those the suites' files and programs cannot
    settle, kernel tests (FIXTURE.VARIANT.TEST) of the tree under test, are returned with where they are
    written, for the suite to check when it collects the tree's tests (check_kernel_tests); any other is
    an error now."""
    names = frozenset().union(*(suite_names(paths.REPO / s) for s in doc.data["suites"]))
    later = []
    for i, entry in enumerate(doc.data["known_failures"]):
        for j, pattern in enumerate(entry["tests"]):
            where = doc.where(("known_failures", i, "tests", j))
            if _names_statically(pattern, names, programs):
                continue
            if not _KSELFTEST_NAME.fullmatch(pattern):
                raise DriverError(f"{where}: {pattern!r} matches no test of {', '.join(doc.data['suites'])} (their "
                                  f"test functions: {', '.join(sorted(names)) or 'none'}; program runs: "
                                  f"{', '.join(r.id for r in programs) or 'none'})")
            later.append((pattern, where))
    return tuple(later)


def check_kernel_tests(profile: DriverProfile, tests: Iterable[str]) -> None:
    """At collection, with the tree's kernel tests known: every FIXTURE.VARIANT.TEST pattern of the profile must
    match one of them (a typo would otherwise turn no failure into an xfail, silently)."""
    tests = list(tests)
    for pattern, where in profile.kernel_test_patterns:
        if not any(fnmatch.fnmatchcase(t, pattern) for t in tests):
            raise DriverError(f"{where}: {pattern!r} matches none of the {len(tests)} kernel tests of this tree "
                              f"({', '.join(tests[:5])}{', ...' if len(tests) > 5 else ''})")


# --- in the guest ----------------------------------------------------------------------------------------


def require_config(build: KernelBuild, *symbols: str) -> None:
    """Skip the test, naming the symbol, when the kernel under test lacks one of `symbols`."""
    for sym in symbols:
        if not build.has(sym):
            pytest.skip(f"CONFIG_{sym} is not set in this kernel")


def kernel_said(ssh: SSH, pattern: str) -> list[str]:
    """The whole kernel log's messages (timestamps stripped) that match the regex `pattern`, e.g. what a
    driver printed at boot, before any test's dmesg marker."""
    rx = re.compile(pattern)
    return [msg for line in ssh.run(["dmesg"], check=True).stdout.splitlines() if rx.search(msg := strip_prefix(line))]


def install(ssh: SSH, local: Path) -> str:
    """Copy a program built on the host to /guest/bin/ (once per guest); return its path there."""
    remote = f"{GUEST_BIN}/{local.name}"
    size = local.stat().st_size
    if ssh.run(["sh", "-c", f'[ "$(stat -c %s {shlex.quote(remote)} 2>/dev/null)" = {size} ]']).ok:
        return remote
    ssh.put(local, remote)
    return remote


def load_module(ssh: SSH, profile: DriverProfile) -> None:
    """Bring the driver up: load its modules unless its device is already there (one the harness built from
    /guest/modules with insmod, else the kernel's with modprobe); fail with the reason."""
    if profile.device and ssh.run(["test", "-e", profile.device]).ok:
        return
    for module in profile.modules:
        ours = f"{GUEST_MODULES}/{module}.ko"
        argv = ["insmod", ours] if ssh.run(["test", "-e", ours]).ok else ["modprobe", module]
        result = ssh.run(argv)
        if not result.ok and "File exists" not in result.stderr:  # insmod of one already loaded
            pytest.fail(f"{shlex.join(argv)} failed: {result.stderr.strip()}")
    if profile.device and not ssh.run(["test", "-e", profile.device]).ok:
        pytest.fail(f"{profile.device} did not appear after loading {profile.module or 'nothing'}")


def thp_mode(ssh: SSH) -> str | None:
    """The guest's transparent hugepage mode (always, madvise, never), or None without THP."""
    result = ssh.run(["cat", "/sys/kernel/mm/transparent_hugepage/enabled"])
    chosen = [w.strip("[]") for w in result.stdout.split() if w.startswith("[")]
    return chosen[0] if result.ok and chosen else None


def runs_one_test(tree: Path) -> bool:
    """Whether the tree's kselftest_harness.h takes `-r FIXTURE.VARIANT.TEST` (and -l); 6.1's takes no option
    and always runs every test."""
    header = tree / "tools/testing/selftests/kselftest_harness.h"
    return header.exists() and "case 'r':" in header.read_text()


def run_kselftest(ssh: SSH, binary: str, test: str, timeout: float) -> tuple[ktap.TestResult | None, str]:
    """Run one test of a kselftest_harness program (`-r FIXTURE.VARIANT.TEST`); its result and whole output."""
    result = ssh.run(["sh", "-c", 'cd /tmp && exec "$0" -r "$1" 2>&1', binary, test], timeout=timeout)
    run = ktap.parse(result.stdout)
    return run.by_name().get(test), result.stdout


def verdict(result: ktap.TestResult | None, output: str, test: str, known: str | None) -> None:
    """The kernel's verdict as pytest's: pass, skip (with the kernel's reason), xfail, or fail with the log.

    A kernel XPASS counts as a pass, as kselftest_harness.h counts it. A failure listed as known for this
    kernel becomes an xfail with the known reason.
    """
    if result is None:
        pytest.fail(f"the kernel test {test} reported no result; its output:\n{output}")
    if result.status in ("pass", "xpass"):
        return
    if result.status == "skip":
        pytest.skip(f"kernel: {result.reason or 'skipped without a reason'}")
    if result.status == "xfail":
        pytest.xfail(f"kernel: {result.reason}")
    if known:
        pytest.xfail(f"known kernel failure: {known}")
    pytest.fail(f"kernel test {test} failed:\n{result.log}", pytrace=False)



# --- a kselftest program's run as one test (mm-selftests) -----------------------------------------------

KSFT_PASS, KSFT_SKIP = 0, 4  # kselftest.h; any other exit status is a failure
_RUN_LINE = re.compile(r"^#\s*\[RUN\]\s*(.*?)\s*$")


def selftest_outcome(exit_status: int, run: ktap.Run) -> str:
    """"pass", "skip" or "fail" of a kselftest program from its exit status. Exit 0 with skips and no pass is a
    skip: kselftest.h:ksft_finished() and kselftest_harness.h:test_harness_run() both exit KSFT_PASS when every
    test was skipped."""
    counts = run.counts()
    if exit_status == KSFT_SKIP or (exit_status == KSFT_PASS and counts["skip"]
                                    and not counts["pass"] + counts["xpass"]):
        return "skip"
    return "pass" if exit_status == KSFT_PASS else "fail"


def subtest_name(result: ktap.TestResult) -> str:
    """A subtest's name. kselftest.h programs (cow, ...) print an unnamed `ok N # SKIP why` after `# [RUN] what`."""
    if result.name:
        return result.name
    runs = [m[1] for m in map(_RUN_LINE.match, result.log.splitlines()) if m]
    return runs[-1] if runs else f"#{result.number}"


def subtest_reason(result: ktap.TestResult) -> str:
    """Why a subtest did not pass. 7.x's cow prints the why as a message (`# gup_test not available`) and then
    `ok N # SKIP <its description>`: then the last message before the result line is the reason."""
    if result.reason and result.reason != subtest_name(result):
        return result.reason
    said = [line[1:].strip() for line in result.log.splitlines()[:-1]
            if line.startswith("#") and not _RUN_LINE.match(line) and line[1:].strip()]
    return said[-1] if said else result.reason


def subtests_summary(run: ktap.Run) -> str:
    """Counts per status, then the subtests that did not pass, grouped by status and reason."""
    counts = ", ".join(f"{status} {n}" for status, n in run.counts().items() if n)
    lines = [f"subtests: {counts or 'none reported'}"]
    groups: dict[tuple[str, str], list[str]] = {}
    for r in run.results:
        if r.status not in ("pass", "xpass"):
            groups.setdefault((r.status, subtest_reason(r)), []).append(subtest_name(r))
    for (status, reason), names in groups.items():
        shown = "; ".join(names[:3]) + (f"; ... ({len(names)} in all)" if len(names) > 3 else "")
        lines.append(f"  {status}{f' ({reason})' if reason else ''}: {shown}")
    return "\n".join(lines)


# What a selftest's skip means, read from the test and the kernel: (text in the skip's reason, why, the config
# symbol that would lift it or None, a guest command whose output is the fact that matters or None)
SkipCause = tuple[str, str, str | None, str | None]


def selftest_params(profile: DriverProfile) -> list:
    """The profile's programs as pytest parameters, each with the guest's watchdog: the program's own timeout,
    then a minute to collect what it printed."""
    return [pytest.param(run, id=run.id, marks=pytest.mark.test_timeout(run.timeout + 60)) for run in profile.programs]


def require_kvm(guest: Guest, kernel: Prepared, profile: DriverProfile) -> None:
    """/dev/kvm in the guest, or a skip with the kernel's own words on why KVM could not come up."""
    require_config(kernel.build, *profile.config)
    if not guest.run(["test", "-c", "/dev/kvm"]).ok:
        said = kernel_said(guest.ssh, r"(?i)kvm|svm|vmx")
        pytest.skip(f"no /dev/kvm on machine {guest.vm.profile.name!r} (-cpu {guest.vm.profile.cpu}): "
                    f"{' | '.join(said) or 'the kernel printed nothing about KVM'}")
    if kernel_said(guest.ssh, "could not calculate TSC khz"):
        pytest.skip("the guest kernel could not calibrate its TSC (a loaded host under TCG), and with tsc_khz 0 "
                    "KVM_RUN never enters a guest (arch/x86/kvm/x86.c:kvm_guest_time_update); boot it with "
                    "tsc_early_khz= as configs/machines/kvm.yaml does")


def built_selftest(build_program: Callable[[KernelBuild, str], Path], build: KernelBuild, selftest: SelftestRun,
                   ssh: SSH) -> str:
    """The selftest built against this kernel (by `build_program`: userprogs.mm_selftest, kvm_selftest) and
    copied into the guest; a skip if the tree lacks it, a failure naming the line that stopped the build."""
    try:
        local = build_program(build, selftest.program)
    except SelftestMissing as e:
        pytest.skip(str(e))
    except CompileError as e:  # our build's problem, not the kernel's: say which line stopped it
        pytest.fail(f"{selftest.program} does not build statically against {build.release}: {e.first_error}",
                    pytrace=False)
    return install(ssh, local)


def run_selftest(guest: Guest, kernel: Prepared, profile: DriverProfile, selftest: SelftestRun, program: str,
                 skip_causes: Sequence[SkipCause] = ()) -> None:
    """One run of one of the tree's selftest programs; the verdict is the kernel test's own (selftest_outcome),
    a failure whose failed subtests (or the program, when it named none) are all known being an xfail. The
    output, under a summary, is the test's (the JUnit case's system-out) and kselftest.txt."""
    limit = selftest.timeout * guest.vms.scale
    # busybox timeout kills the program, not the session, so what it printed until then is kept: since 6.12
    # ksft_print_header() makes stdout line-buffered (kselftest.h, "If there is a crash..."); 6.1's is not.
    result = guest.run(["sh", "-c", 'cd /tmp && exec timeout -s KILL "$0" "$@" 2>&1',
                        str(int(limit)), program, *selftest.args], timeout=limit + 30)
    run = ktap.parse(result.stdout)
    command = shlex.join([selftest.program, *selftest.args])
    skipped = [r for r in run.results if r.status == "skip"]
    reasons = sorted({subtest_reason(r) or "no reason given" for r in skipped})
    why_skipped = _explain_skips(reasons or [result.stdout], skip_causes, guest, kernel.build)
    head = "".join([f"$ {command}\nexit status {result.exit_status} after {result.duration_s:.1f} s on "
                    f"{kernel.build.release}\n{subtests_summary(run)}\n",
                    *(f"why skipped: {why}\n" for why in why_skipped)])
    guest.save("kselftest.txt", head + "\n" + result.stdout)
    print(head + "\n" + result.stdout)

    status = result.exit_status
    if result.duration_s >= limit:
        pytest.fail(f"{command} was killed after {limit:.0f} s; its last lines:\n"
                    + "\n".join(result.stdout.splitlines()[-15:]), pytrace=False)
    outcome = selftest_outcome(status, run)
    if outcome == "skip":
        said = reasons or [result.stdout.strip()[-300:]]  # ksft_exit_skip() before any subtest: its message
        pytest.skip(f"kernel: {'; '.join(said + why_skipped)}")
    if outcome == "pass":
        return
    failed = [r for r in run.results if r.status == "fail"]
    thp = thp_mode(guest.ssh)
    # every failed subtest must be known, or the program as a whole when it stopped without a failed subtest
    names = [f"{selftest.id}: {subtest_name(r)}" for r in failed] or [selftest.id]
    known = {name: profile.known_failure(name, kernel.tree.series, thp, kernel.tree.path, kernel.build.has)
             for name in names}
    if all(known.values()):
        pytest.xfail("known failure: " + " | ".join(sorted({str(why) for why in known.values()})))
    unknown = [name for name, why in known.items() if not why]
    logs = [r.log for r in failed if f"{selftest.id}: {subtest_name(r)}" in unknown]
    pytest.fail(f"{command} exited {status}; not known: {', '.join(unknown)}\n"
                + ("\n".join(logs) or "\n".join(result.stdout.splitlines()[-30:])), pytrace=False)


def _explain_skips(reasons: list[str], causes: Sequence[SkipCause], guest: Guest, build: KernelBuild) -> list[str]:
    out = []
    for said, why, symbol, fact in causes:
        if any(said in reason for reason in reasons):
            note = why
            if symbol and not build.has(symbol):
                note += f" (CONFIG_{symbol} is not set in this kernel)"
            if fact:
                note += f" ({guest.run(['sh', '-c', fact]).stdout.strip()})"
            out.append(note)
    return out
