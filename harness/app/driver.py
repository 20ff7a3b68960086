"""The `driver` use case: one driver profile's suites (configs/drivers/NAME.yaml) on its machine, with a verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.app.kernel import KernelChoice
from harness.app.run import RunRequest, RunResult, run_on
from harness.checks import drivers
from harness.errors import UserError
from harness.kernel import kconfig
from harness.kernel.config import fragments_for
from harness.kernel.prepare import prepare
from harness.results import junit


@dataclass(frozen=True)
class DriverRequest:
    name: str
    kernel: KernelChoice = field(default_factory=KernelChoice)
    results_dir: Path | None = None
    k: str | None = None
    boot_timeout: float | None = None
    guest_modules: str = ""
    suites: tuple[str, ...] = ()  # instead of the profile's


@dataclass(frozen=True)
class DriverResult:
    profile: drivers.DriverProfile
    run: RunResult
    verdict: junit.Verdict
    release: str
    notes: list[str] = field(default_factory=list)  # what the build lacks that the profile asks for

    @property
    def exit_code(self) -> int:
        return self.run.exit_code


@dataclass(frozen=True)
class DriverListing:
    profiles: list[drivers.DriverProfile]


def list_drivers() -> DriverListing:
    return DriverListing([drivers.load_driver(name) for name in drivers.known_drivers()])


def fragment_notes(profile: drivers.DriverProfile, notifier: str, series: str, config: dict[str, str],
                   asked: tuple[str, ...] = ()) -> list[str]:
    """What the profile asks of the kernel that this build does not give (its tests will skip). A fragment no
    axis applies (selftests.config) is the user's to ask for: one more kernel, which make test does not build."""
    applied = {f.name for f in fragments_for(notifier, series)}
    axes = {f.name for axis in ("on", "off") for f in fragments_for(axis, series)}
    notes = [f"fragment {f} is not applied on the notifier={notifier} axis" for f in profile.fragments
             if f in axes and f not in applied]
    notes += [f"fragment {f} is not applied: --fragment {f.removesuffix('.config')} builds a kernel with it"
              for f in profile.fragments if f not in axes and f.removesuffix(".config") not in asked]
    notes += [f"CONFIG_{sym} is not set in this kernel" for sym in profile.config
              if config.get(sym, "n") not in ("y", "m")]
    return notes


def require_arch(profile: drivers.DriverProfile, arch: str) -> None:
    if arch not in profile.arches:
        raise UserError(f"driver {profile.name} is proven on {', '.join(profile.arches)}, not on {arch} (the "
                        f"`arches` of configs/drivers/{profile.name}.yaml)")


def driver(req: DriverRequest) -> DriverResult:
    profile = drivers.load_driver(req.name)
    k = req.kernel
    require_arch(profile, k.arch)
    prepared = prepare(k.kernel_src, k.notifier, fragments=k.fragments, arch=k.arch)
    notes = fragment_notes(profile, k.notifier, prepared.tree.series, kconfig.read_config_values(prepared.build.config),
                           k.fragments)
    for note in notes:  # before the run, which takes minutes
        print(f"note: {note}: expect skips", flush=True)
    suites = req.suites or tuple(str(paths.REPO / s) for s in profile.suites)
    result = run_on(RunRequest(k, profile.machine, suites, req.results_dir, req.k, req.boot_timeout,
                               req.guest_modules), prepared)
    kernel_json = result.run_dir / "kernel.json"
    release = json.loads(kernel_json.read_text()).get("release", "?") if kernel_json.exists() \
        else prepared.build.release
    return DriverResult(profile, result, junit.run_verdict(result.run_dir), release, notes)
