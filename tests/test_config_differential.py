"""The config engine against each tree's own scripts/kconfig, symbol by symbol (6.1, 6.12, 7.2, 7.3 for x86-64;
6.12 and 7.3 for arm64, with the cross compiler Kconfig asks what it supports: gcc-aarch64-linux-gnu)).

The engine (kconfiglib, taught the constructs Linux added since: harness/kernel/kconfig.py) decides the
value of every symbol before the kernel's own `olddefconfig` runs. If its model of a tree is right, that
olddefconfig has nothing left to change: the .config the engine writes is a fixed point of the kernel's
tool. Each case writes the engine's .config, runs the tree's olddefconfig on a copy, and compares every
symbol (absent counting as n), for
  - tinyconfig plus the project's fragments for that series (what `harness kernel` builds),
  - the same with `--off MMU_NOTIFIER` (the notifier-off axis), and
  - Debian's cloud-amd64 distro config of that series, read as a base (x86-64).
Each tree costs a parse (about 5 s), a build of scripts/kconfig/conf and three olddefconfig runs. The
trees and configs come from the cache or Debian (HARNESS_FETCH_TREES=1, as `make test` sets, fetches
7.x from trixie-backports); without them the case skips and says how to get them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import kconfiglib
import pytest

from harness.kernel import composition, config, kconfig, kconfig_explain
from harness.kernel.arch import HOST, Arch, CompilerMissing, load_arch
from harness.kernel.build import make_cmd
from harness.kernel.config import config_spec
from harness.kernel.source import KernelTree
from tests.trees import distro_config, kernel_tree

CASES = [(series, HOST) for series in ("6.1", "6.12", "7.2", "7.3")] + [("6.12", "arm64"), ("7.3", "arm64")]
pytestmark = pytest.mark.kernel_trees


@dataclass(frozen=True)
class Case:
    kernel: KernelTree
    scratch: Path
    arch: Arch


@pytest.fixture(scope="module", params=CASES, ids=[f"{s}-{a}" for s, a in CASES])
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    series, arch = request.param
    path = kernel_tree(series)
    version = kconfig.tree_version(path)
    try:
        load_arch(arch).require_compiler()  # Kconfig asks it what it supports
    except CompilerMissing as e:
        pytest.skip(str(e))
    return Case(KernelTree(path, version, f"test:{path}", immutable=True), tmp_path_factory.mktemp(f"{series}-{arch}"),
                load_arch(arch))


@pytest.fixture(scope="module")
def model(tree: Case) -> kconfiglib.Kconfig:
    return kconfig.load_tree(tree.kernel.path, tree.kernel.version, arch=tree.arch)


def olddefconfig_of(case: Case, config: Path) -> Path:
    """The tree's own olddefconfig run on a copy of `config` (conf is built once per scratch directory)."""
    scratch = case.scratch
    shutil.copyfile(config, scratch / ".config")
    proc = subprocess.run(make_cmd(case.kernel, scratch, "olddefconfig", arch=case.arch), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return scratch / ".config"


def disagreements(engine: Path, kernel: Path) -> list[str]:
    """Every symbol whose value differs between two .config files; absent and "is not set" are both n."""
    return [f"CONFIG_{name}: engine {a or '(absent)'}, kernel {b or '(absent)'}"
            for name, a, b in kconfig_explain.diff_configs(engine, kernel)]


def check_fixed_point(model: kconfiglib.Kconfig, case: Case, name: str) -> None:
    engine = case.scratch / f"{name}.engine.config"
    kconfig.write_config(model, engine)
    differ = disagreements(engine, olddefconfig_of(case, engine))
    assert not differ, (f"{case.kernel.version} {case.arch.name}, {name}: the kernel's olddefconfig changed "
                        f"{len(differ)} value(s) "
                        "the engine decided:\n  " + "\n  ".join(differ[:40]))


def test_project_fragments(model: kconfiglib.Kconfig, tree: Case) -> None:
    spec = config_spec("on", tree.kernel.series, arch=tree.arch.name)
    composed = composition.compose(model, spec.base, spec.requests())
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "y"
    assert kconfig.tri_value(model.syms[tree.arch.symbol]) == "y"
    check_fixed_point(model, tree, "tinyconfig+fragments")
    kconfig.verify(model, tree.scratch / ".config", composed.requests)  # the arch's fragment stuck too


def test_notifier_off(model: kconfiglib.Kconfig, tree: Case) -> None:
    spec = config_spec("off", tree.kernel.series, arch=tree.arch.name)
    composition.compose(model, spec.base, spec.requests(), off=spec.off)
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "n"
    check_fixed_point(model, tree, "notifier-off")


def test_debian_distro_config(model: kconfiglib.Kconfig, tree: Case) -> None:
    if tree.arch.name != HOST:
        pytest.skip("Debian's cloud config read here is cloud-amd64's: an x86-64 config")
    cloud = distro_config(tree.kernel.series, tree.scratch)
    kconfig.apply_base(model, str(cloud))
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "y"  # a distro kernel has its consumers
    check_fixed_point(model, tree, "debian-cloud")


def test_a_tree_the_engine_cannot_model_still_builds(tree: Case, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A construct the engine does not know never ends the run: the kernel's own tools compose the same
    .config for the project's fragments, every request still checked; only --off says it cannot."""
    kernel = tree.kernel
    spec = config_spec("on", kernel.series, arch=tree.arch.name)
    modelled, modelled_key, _ = config.compose(kernel, spec, tmp_path / "log")
    expected = modelled.read_text()

    def unmodelled(*args: object) -> None:
        raise kconfig.Unmodelled(f"the config engine cannot model {kernel.path}: drivers/x/Kconfig:7: error: "
                                 "couldn't parse 'new-keyword'")

    monkeypatch.setattr(kconfig, "load_tree", unmodelled)
    final, key, why = config.compose(kernel, spec, tmp_path / "log")
    assert final.read_text() == expected
    assert key == modelled_key
    assert "drivers/x/Kconfig:7" in why and "the kernel's own scripts/kconfig" in why
    with pytest.raises(kconfig.Unmodelled, match=r"drivers/x/Kconfig:7.*--off MMU_NOTIFIER needs that model"):
        config.compose(kernel, config_spec("off", kernel.series, arch=tree.arch.name), tmp_path / "log")
