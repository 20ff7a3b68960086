"""Real drivers under test: their profiles (configs/drivers/NAME.yaml) and what their suites share in the guest.

A profile says what a driver needs and who tests it:

    description: ...
    fragments: [base.config, drivers.config]   # configs/fragments/ the kernel needs for it
    config: [TEST_HMM]                          # symbols that must be y or m in the build, else its tests skip
    machine: default                            # configs/machines/ profile (devices, CPU model)
    module: test_hmm                            # module to load in the guest (none: built in)
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
        code:                                   # only when the tree under test has the faulty code
          file: mm/rmap.c                       #   a file of the tree
          contains: "if (PageTail(pages[i]) ||" #   text in it (runs of whitespace match any whitespace)
        without: [USERFAULTFD]                  # only on a kernel that lacks these symbols (a test that needs them)
        reason: ...

A `code` condition ties the xfail to the kernel code that causes it, not to a list of versions: any tree with
that code gets it (6.1 and 6.12 alike), and a tree that fixed it does not, so the test must pass there.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import paths
from harness.errors import UserError
from harness.kernel.build import KernelBuild
from harness.observe import ktap
from harness.profiles import load_named
from harness.results.splat import strip_prefix
from harness.vm.ssh import SSH

DRIVERS = paths.CONFIGS / "drivers"
GUEST_BIN = "/guest/bin"


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
    module: str | None
    device: str | None
    suites: tuple[str, ...]
    known_failures: tuple[KnownFailure, ...] = ()
    programs: tuple[SelftestRun, ...] = ()

    def known_failure(self, test: str, series: str, thp: str | None = None, tree: Path | None = None,
                      has: Callable[[str], bool] | None = None) -> str | None:
        """Why `test` is expected to fail on this kernel series, THP mode, tree (for `code`) and config (`has`
        for `without`), or None."""
        return next((k.reason for k in self.known_failures if k.applies(test, series, thp, tree, has)), None)


_KEYS = {"description", "fragments", "config", "machine", "module", "device", "suites", "known_failures", "programs"}
_RUN_KEYS = {"id", "program", "args", "timeout", "needs"}
_KNOWN_KEYS = {"tests", "reason", "series", "thp", "code", "without"}


def known_drivers() -> list[str]:
    return sorted(p.stem for p in DRIVERS.glob("*.yaml"))


def load_driver(name: str) -> DriverProfile:
    data = load_named(DRIVERS, name, "driver", _KEYS, DriverError)
    path = DRIVERS / f"{name}.yaml"
    missing = [k for k in ("machine", "suites") if not data.get(k)]
    if missing:
        raise DriverError(f"{path}: {' and '.join(missing)} must be given")
    profile = DriverProfile(
        name=name, description=str(data.get("description", "")),
        fragments=_strings(data, "fragments", path), config=_strings(data, "config", path),
        machine=str(data["machine"]), module=data.get("module") or None, device=data.get("device") or None,
        suites=_strings(data, "suites", path),
        known_failures=tuple(_known_failure(k, path) for k in data.get("known_failures") or ()),
        programs=tuple(_selftest_run(r, path) for r in data.get("programs") or ()))
    ids = [r.id for r in profile.programs]
    if len(ids) != len(set(ids)):
        raise DriverError(f"{path}: programs need distinct ids, got {ids}")
    for frag in profile.fragments:
        if not (paths.CONFIGS / "fragments" / frag).exists():
            raise DriverError(f"{path}: fragment {frag} is not in configs/fragments/")
    if not (paths.CONFIGS / "machines" / f"{profile.machine}.yaml").exists():
        raise DriverError(f"{path}: machine profile {profile.machine} is not in configs/machines/")
    for suite in profile.suites:
        if not (paths.REPO / suite).exists():
            raise DriverError(f"{path}: suite {suite} does not exist")
    return profile


def _strings(data: dict, key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DriverError(f"{path}: {key} must be a list of strings")
    return tuple(value)


def _known_failure(entry: object, path: Path) -> KnownFailure:
    if not isinstance(entry, dict) or set(entry) - _KNOWN_KEYS or not entry.get("tests") or not entry.get("reason"):
        raise DriverError(f"{path}: each known_failures entry needs tests and reason (keys: {sorted(_KNOWN_KEYS)})")
    code = entry.get("code")
    if code is not None and (not isinstance(code, dict) or set(code) != {"file", "contains"}
                             or not all(isinstance(v, str) and v.strip() for v in code.values())):
        raise DriverError(f"{path}: a known_failures code condition is {{file: PATH, contains: TEXT}}, got {code!r}")
    without = entry.get("without") or []
    if not isinstance(without, list) or not all(isinstance(s, str) for s in without):
        raise DriverError(f"{path}: a known_failures `without` is a list of config symbols, got {without!r}")
    return KnownFailure(tests=tuple(entry["tests"]), reason=" ".join(str(entry["reason"]).split()),
                        series=tuple(str(s) for s in entry.get("series") or ()), thp=entry.get("thp"),
                        code=(code["file"], code["contains"]) if code else None,
                        without=tuple(without))


def _selftest_run(entry: object, path: Path) -> SelftestRun:
    if isinstance(entry, str):
        return SelftestRun(id=entry, program=entry)
    if (not isinstance(entry, dict) or set(entry) - _RUN_KEYS or not isinstance(entry.get("program"), str)
            or not all(isinstance(a, str) for a in (*(entry.get("args") or []), *(entry.get("needs") or [])))
            or not isinstance(entry.get("timeout", 300), (int, float))):
        raise DriverError(f"{path}: a programs entry is a name or {{program: NAME, args: [STR..], id: ID, "
                          f"timeout: SECONDS, needs: [SETUP..]}}, got {entry!r}")
    return SelftestRun(id=str(entry.get("id") or entry["program"]), program=entry["program"],
                       args=tuple(entry.get("args") or ()), timeout=float(entry.get("timeout", 300)),
                       needs=tuple(entry.get("needs") or ()))


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
    """Bring the driver up: modprobe its module unless its device is already there; fail with the reason."""
    if profile.device and ssh.run(["test", "-e", profile.device]).ok:
        return
    if profile.module:
        result = ssh.run(["modprobe", profile.module])
        if not result.ok:
            pytest.fail(f"modprobe {profile.module} failed: {result.stderr.strip()}")
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
