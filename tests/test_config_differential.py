"""The config engine against each tree's own scripts/kconfig, symbol by symbol (6.1, 6.12, 7.2, 7.3).

The engine (kconfiglib, taught the constructs Linux added since: harness/kernel/kconfig.py) decides the
value of every symbol before the kernel's own `olddefconfig` runs. If its model of a tree is right, that
olddefconfig has nothing left to change: the .config the engine writes is a fixed point of the kernel's
tool. Each case writes the engine's .config, runs the tree's olddefconfig on a copy, and compares every
symbol (absent counting as n), for
  - tinyconfig plus the project's fragments for that series (what `harness kernel` builds),
  - the same with `--off MMU_NOTIFIER` (the notifier-off axis), and
  - Debian's cloud-amd64 distro config of that series, read as a base.
Each tree costs a parse (about 5 s), a build of scripts/kconfig/conf and three olddefconfig runs. The
trees and configs come from the cache or Debian (HARNESS_FETCH_TREES=1, as `make test` sets, fetches
7.x from trixie-backports); without them the case skips and says how to get them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kconfiglib
import pytest

from harness.kernel import composition, config, kconfig, kconfig_explain
from harness.kernel.build import make_cmd
from harness.kernel.config import config_spec
from harness.kernel.source import KernelTree
from tests.trees import distro_config, kernel_tree

SERIES = ("6.1", "6.12", "7.2", "7.3")
pytestmark = pytest.mark.kernel_trees


@pytest.fixture(scope="module", params=SERIES)
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[KernelTree, Path]:
    path = kernel_tree(request.param)
    version = kconfig.tree_version(path)
    return KernelTree(path, version, f"test:{path}", immutable=True), tmp_path_factory.mktemp(request.param)


@pytest.fixture(scope="module")
def model(tree: tuple[KernelTree, Path]) -> kconfiglib.Kconfig:
    return kconfig.load_tree(tree[0].path, tree[0].version)


def olddefconfig_of(kernel: KernelTree, scratch: Path, config: Path) -> Path:
    """The tree's own olddefconfig run on a copy of `config` (conf is built once per scratch directory)."""
    shutil.copyfile(config, scratch / ".config")
    proc = subprocess.run(make_cmd(kernel, scratch, "olddefconfig"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return scratch / ".config"


def disagreements(engine: Path, kernel: Path) -> list[str]:
    """Every symbol whose value differs between two .config files; absent and "is not set" are both n."""
    return [f"CONFIG_{name}: engine {a or '(absent)'}, kernel {b or '(absent)'}"
            for name, a, b in kconfig_explain.diff_configs(engine, kernel)]


def check_fixed_point(model: kconfiglib.Kconfig, kernel: KernelTree, scratch: Path, name: str) -> None:
    engine = scratch / f"{name}.engine.config"
    kconfig.write_config(model, engine)
    differ = disagreements(engine, olddefconfig_of(kernel, scratch, engine))
    assert not differ, (f"{kernel.version}, {name}: the kernel's olddefconfig changed {len(differ)} value(s) "
                        "the engine decided:\n  " + "\n  ".join(differ[:40]))


def test_project_fragments(model: kconfiglib.Kconfig, tree: tuple[KernelTree, Path]) -> None:
    kernel, scratch = tree
    spec = config_spec("on", kernel.series)
    composition.compose(model, spec.base, spec.requests())
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "y"
    check_fixed_point(model, kernel, scratch, "tinyconfig+fragments")


def test_notifier_off(model: kconfiglib.Kconfig, tree: tuple[KernelTree, Path]) -> None:
    kernel, scratch = tree
    spec = config_spec("off", kernel.series)
    composition.compose(model, spec.base, spec.requests(), off=spec.off)
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "n"
    check_fixed_point(model, kernel, scratch, "notifier-off")


def test_debian_distro_config(model: kconfiglib.Kconfig, tree: tuple[KernelTree, Path]) -> None:
    kernel, scratch = tree
    cloud = distro_config(kernel.series, scratch)
    kconfig.apply_base(model, str(cloud))
    assert kconfig.tri_value(model.syms["MMU_NOTIFIER"]) == "y"  # a distro kernel has its consumers
    check_fixed_point(model, kernel, scratch, "debian-cloud")


def test_a_tree_the_engine_cannot_model_still_builds(tree: tuple[KernelTree, Path], monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A construct the engine does not know never ends the run: the kernel's own tools compose the same
    .config for the project's fragments, every request still checked; only --off says it cannot."""
    kernel, _ = tree
    spec = config_spec("on", kernel.series)
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
        config.compose(kernel, config_spec("off", kernel.series), tmp_path / "log")
