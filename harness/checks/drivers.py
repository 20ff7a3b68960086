"""Real drivers under test: their profiles (configs/drivers/NAME.yaml) and what their suites share in the guest.

A profile says what a driver needs and who tests it:

    description: ...
    fragments: [base.config, drivers.config]   # configs/fragments/ the kernel needs for it
    config: [TEST_HMM]                          # symbols that must be y or m in the build, else its tests skip
    machine: default                            # configs/machines/ profile (devices, CPU model)
    module: test_hmm                            # module to load in the guest (none: built in)
    device: /dev/hmm_dmirror0                   # what exists once the driver is up
    suites: [suites/test_hmm.py]
    known_failures:                             # kernel bugs the tests find: reported as xfail, with why
      - tests: ["hmm.*.exclusive"]              # fnmatch patterns over kernel test or pytest test names
        series: ["6.12"]                        # kernel series it applies to (none: all)
        thp: always                             # only when the guest's THP mode is this
        code:                                   # only when the tree under test has the faulty code
          file: mm/rmap.c                       #   a file of the tree
          contains: "if (PageTail(pages[i]) ||" #   text in it (runs of whitespace match any whitespace)
        reason: ...

A `code` condition ties the xfail to the kernel code that causes it, not to a list of versions: any tree with
that code gets it (6.1 and 6.12 alike), and a tree that fixed it does not, so the test must pass there.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import paths
from harness.errors import UserError
from harness.kernel.build import KernelBuild
from harness.observe import ktap
from harness.observe.splat import strip_prefix
from harness.profiles import load_named
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

    def applies(self, test: str, series: str, thp: str | None, tree: Path | None = None) -> bool:
        return (any(fnmatch.fnmatchcase(test, pattern) for pattern in self.tests)
                and (not self.series or series in self.series) and (self.thp is None or self.thp == thp)
                and (self.code is None or (tree is not None and tree_contains(tree, *self.code))))


def tree_contains(tree: Path, file: str, text: str) -> bool:
    """Whether the tree's `file` contains `text`, any run of whitespace in either matching any other."""
    path = tree / file
    return path.is_file() and " ".join(text.split()) in " ".join(path.read_text(errors="replace").split())


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

    def known_failure(self, test: str, series: str, thp: str | None = None, tree: Path | None = None) -> str | None:
        """Why `test` is expected to fail on this kernel series, THP mode and tree (for `code`), or None."""
        return next((k.reason for k in self.known_failures if k.applies(test, series, thp, tree)), None)


_KEYS = {"description", "fragments", "config", "machine", "module", "device", "suites", "known_failures"}
_KNOWN_KEYS = {"tests", "reason", "series", "thp", "code"}


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
        known_failures=tuple(_known_failure(k, path) for k in data.get("known_failures") or ()))
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
    return KnownFailure(tests=tuple(entry["tests"]), reason=" ".join(str(entry["reason"]).split()),
                        series=tuple(str(s) for s in entry.get("series") or ()), thp=entry.get("thp"),
                        code=(code["file"], code["contains"]) if code else None)


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

