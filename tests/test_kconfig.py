"""The config engine on real Kconfig trees (Debian's linux-source-6.12 and -6.1) and Debian's cloud config.

Trees are found through HARNESS_LINUX_6_12 / HARNESS_LINUX_6_1, else in the harness cache (unpacked
from /usr/src/linux-source-X.Y.tar.xz when only the tarball is there). The cloud configs come from
HARNESS_CLOUD_CONFIG_6_12 / _6_1, /boot/config-X.Y*-cloud-amd64 or the linux-config-X.Y package.
Parsing a tree takes a few seconds, so each is parsed once per module; every test starts with
apply_base() (which clears all user values) because the Kconfig object is shared and mutable.
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import kconfiglib
import pytest

from harness import paths
from harness.cli import main as harness_cli
from harness.kernel import composition, kconfig, kconfig_explain, resolver
from harness.kernel.config import fragments_for
from harness.kernel.kconfig import ConfigError, Request
from tests.trees import kernel_tree

BASE = paths.CONFIGS / "fragments" / "base.config"
NOTIFIER_ON = fragments_for("on")  # what the pipeline builds for the notifier-on axis

# test_hmm and what it needs, spelled out here so that these tests do not move with the project's fragments.
HMM_NEEDS = """
CONFIG_64BIT=y
CONFIG_MODULES=y
CONFIG_TRANSPARENT_HUGEPAGE=y
CONFIG_MIGRATION=y
CONFIG_SPARSEMEM_VMEMMAP=y
CONFIG_MEMORY_HOTPLUG=y
CONFIG_MEMORY_HOTREMOVE=y
CONFIG_ZONE_DEVICE=y
CONFIG_DEVICE_PRIVATE=y
"""
HMM = "CONFIG_RUNTIME_TESTING_MENU=y\nCONFIG_TEST_HMM=m\n"


def _cloud_config(series: str, tmp_dir: Path) -> Path:
    env = os.environ.get(f"HARNESS_CLOUD_CONFIG_{series.replace('.', '_')}")
    if env:
        return Path(env)
    booted = sorted(Path("/boot").glob(f"config-{series}.*-cloud-amd64"))
    if booted:
        return booted[-1]
    packaged = Path(f"/usr/src/linux-config-{series}/config.amd64_none_cloud-amd64.xz")
    if packaged.exists():
        out = tmp_dir / f"config-{series}-cloud-amd64"
        out.write_bytes(lzma.decompress(packaged.read_bytes()))
        return out
    pytest.skip(f"no Debian {series} cloud config: apt-get install linux-config-{series}")


@pytest.fixture(scope="module")
def k612() -> kconfiglib.Kconfig:
    return kconfig.load_tree(kernel_tree("6.12"))


@pytest.fixture(scope="module")
def k61() -> kconfiglib.Kconfig:
    return kconfig.load_tree(kernel_tree("6.1"))


@pytest.fixture(scope="module", params=["6.12", "6.1"])
def tree(request: pytest.FixtureRequest) -> kconfiglib.Kconfig:
    return request.getfixturevalue("k612" if request.param == "6.12" else "k61")


@pytest.fixture(scope="module")
def cloud_612(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cloud_config("6.12", tmp_path_factory.mktemp("cloud"))


@pytest.fixture(scope="module")
def cloud(tree: kconfiglib.Kconfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    series = ".".join(kconfig.tree_version(Path(tree.srctree)).split(".")[:2])
    return _cloud_config(series, tmp_path_factory.mktemp("cloud"))


def _requests(*fragments: Path) -> list[Request]:
    return [req for frag in fragments for req in kconfig.parse_fragment(frag)]


def _text(text: str, name: str = "test-fragment") -> list[Request]:
    return kconfig.parse_fragment_text(text, name)


def _holding(kconf: kconfiglib.Kconfig, requests: list[Request], tmp_path: Path) -> list[Request]:
    """The requests that hold now. The project's fragments need not all stick on every tree (that is the
    pipeline's check); here an --off must not break any that did."""
    probe = tmp_path / "probe.config"
    kconfig.write_config(kconf, probe)
    values = kconfig.read_config_values(probe)
    probe.unlink()
    return [req for req in requests if kconfig.same_value(req.value, values.get(req.symbol, "n"))]


def _value(kconf: kconfiglib.Kconfig, name: str) -> str:
    return kconfig.tri_value(kconf.syms[name])


def _active_selectors(kconf: kconfiglib.Kconfig, name: str) -> list[str]:
    sym = kconf.syms[name]
    terms = kconfiglib.split_expr(sym.rev_dep, kconfiglib.OR) if sym.rev_dep is not kconf.n else []
    return [kconfiglib.split_expr(t, kconfiglib.AND)[0].name for t in terms if kconfiglib.expr_value(t)]


# -- the tree itself ----------------------------------------------------------------------------------


def test_tree_version_comes_from_the_makefile(tree: kconfiglib.Kconfig) -> None:
    version = kconfig.tree_version(Path(tree.srctree))
    assert version.split(".")[:2] in (["6", "12"], ["6", "1"])
    assert version.split(".")[2].isdigit()


def test_missing_tree_is_one_paragraph(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        kconfig.load_tree(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_directory_that_is_not_a_kernel_tree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a Linux kernel source tree: it has no Kconfig"):
        kconfig.load_tree(tmp_path)
    # Kconfig files present, but a Makefile without the version lines
    (tmp_path / "arch/x86").mkdir(parents=True)
    for name in ("Kconfig", "arch/x86/Kconfig"):
        (tmp_path / name).write_text("")
    (tmp_path / "Makefile").write_text("all:\n\techo hi\n")
    with pytest.raises(ConfigError, match="no numeric VERSION and PATCHLEVEL"):
        kconfig.tree_version(tmp_path)


# -- fragments and requests ---------------------------------------------------------------------------


def test_malformed_fragment_line_names_file_and_line(tmp_path: Path) -> None:
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_KVM=y\n# a comment\nCONFIG_KVM y\n")
    with pytest.raises(ConfigError, match=r"bad\.config:3: not a Kconfig fragment line: 'CONFIG_KVM y'"):
        kconfig.parse_fragment(frag)


def test_unknown_symbol_is_an_error_with_a_suggestion(k612: kconfiglib.Kconfig) -> None:
    kconfig.apply_base(k612, "tinyconfig")
    with pytest.raises(ConfigError, match=r"unknown Kconfig symbol CONFIG_MMU_NOTIFER.*CONFIG_MMU_NOTIFIER"):
        resolver.turn_off(k612, "MMU_NOTIFER")
    with pytest.raises(ConfigError, match="unknown Kconfig symbol"):
        kconfig_explain.explain(k612, "CONFIG_NO_SUCH_THING")
    with pytest.raises(ConfigError, match=r"^frag:7: unknown Kconfig symbol CONFIG_NO_SUCH_THING"):
        kconfig.apply_requests(k612, [Request("NO_SUCH_THING", "y", "frag:7")])


def test_not_set_for_a_symbol_an_older_tree_lacks_is_skipped(k61: kconfiglib.Kconfig) -> None:
    # base.config says "# CONFIG_SLUB_TINY is not set"; SLUB_TINY appeared in 6.2.
    kconfig.apply_base(k61, "tinyconfig")
    skipped = kconfig.apply_requests(k61, _requests(BASE))
    assert [req.symbol for req in skipped] == ["SLUB_TINY"]


def test_request_that_cannot_stick_names_the_unmet_dependency(k612: kconfiglib.Kconfig, tmp_path: Path) -> None:
    requests = [req for req in _requests(BASE) + _text(HMM_NEEDS + HMM) if req.symbol != "DEVICE_PRIVATE"]
    kconfig.apply_base(k612, "tinyconfig")
    kconfig.apply_requests(k612, requests)
    out = tmp_path / ".config"
    with pytest.raises(ConfigError) as err:
        kconfig.write_verified(k612, out, requests)
    message = str(err.value)
    assert "CONFIG_TEST_HMM: asked 'm'" in message
    assert "DEVICE_PRIVATE[=n]" in message
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-done left behind


# -- off ----------------------------------------------------------------------------------------------


def test_off_from_tinyconfig_with_test_hmm(tree: kconfiglib.Kconfig, tmp_path: Path) -> None:
    requests = _requests(BASE) + _text(HMM_NEEDS + HMM + "CONFIG_MMU_NOTIFIER=y\n", "on.config")
    composition.compose(tree, "tinyconfig", requests)
    held = _holding(tree, requests, tmp_path)
    assert {"TEST_HMM", "MMU_NOTIFIER"} <= {req.symbol for req in held}
    result = composition.compose(tree, "tinyconfig", requests, off=["MMU_NOTIFIER"])
    assert _value(tree, "MMU_NOTIFIER") == "n"
    assert [(c.symbol, c.old, c.new, c.reason) for c in result.changes] == [
        ("TEST_HMM", "m", "n", "selects MMU_NOTIFIER"), ("MMU_NOTIFIER", "y", "n", "requested off")]
    assert result.overridden == [Request("TEST_HMM", "m", "on.config:12"), Request("MMU_NOTIFIER", "y", "on.config:13")]
    assert Request("MMU_NOTIFIER", "n", "--off") in result.requests

    out = tmp_path / ".config"
    kconfig.write_verified(tree, out, [req for req in result.requests if req in held or req.origin == "--off"])
    values = kconfig.read_config_values(out)
    assert values.get("MMU_NOTIFIER", "n") == "n"
    assert values.get("TEST_HMM", "n") == "n"
    assert values["DEVICE_PRIVATE"] == "y"  # the rest still holds


def test_off_from_the_pipelines_notifier_on_config(tree: kconfiglib.Kconfig, tmp_path: Path) -> None:
    requests = _requests(*NOTIFIER_ON)
    composition.compose(tree, "tinyconfig", requests)
    selectors = _active_selectors(tree, "MMU_NOTIFIER")
    assert selectors, "the notifier-on fragments no longer turn MMU_NOTIFIER on"
    held = _holding(tree, requests, tmp_path)

    result = composition.compose(tree, "tinyconfig", requests, off=["MMU_NOTIFIER"])
    for name in selectors:
        assert _value(tree, name) == "n", name
        assert any(c.symbol == name and c.reason.endswith("selects MMU_NOTIFIER") for c in result.changes)
    out = tmp_path / ".config"
    # Every fragment line that held before still holds, but those the off had to override.
    kconfig.write_verified(tree, out, [req for req in result.requests if req in held or req.origin == "--off"])
    assert kconfig.read_config_values(out).get("MMU_NOTIFIER", "n") == "n"


def test_off_from_the_debian_cloud_config(tree: kconfiglib.Kconfig, cloud: Path, tmp_path: Path) -> None:
    kconfig.apply_base(tree, str(cloud))
    assert _value(tree, "MMU_NOTIFIER") == "y"
    selectors = _active_selectors(tree, "MMU_NOTIFIER")
    assert len(selectors) >= 2, selectors  # a distro kernel has several consumers
    before = kconfig.value_snapshot(tree)

    changes = resolver.turn_off(tree, "MMU_NOTIFIER")

    assert _value(tree, "MMU_NOTIFIER") == "n"
    for name in selectors:
        assert _value(tree, name) == "n", name
    # Every change is explained by a chain that ends at the request.
    for change in changes:
        assert change.reason == "requested off" or change.reason.endswith("MMU_NOTIFIER"), change
    for name in selectors:
        assert any(c.symbol == name and c.reason.endswith("selects MMU_NOTIFIER") for c in changes), name
    # KVM: 6.1's KVM selects MMU_NOTIFIER; 6.12's goes through KVM_X86 and KVM_GENERIC_MMU_NOTIFIER.
    if before.get("KVM") in ("y", "m"):
        assert _value(tree, "KVM_X86" if "KVM_X86" in before else "KVM") == "n"
    # Nothing drastic for it: the machine stays a 64-bit SMP machine with PCI, modules and networking.
    for name in ("64BIT", "SMP", "PCI", "MODULES", "NET", "IOMMU_SUPPORT", "VIRTUALIZATION"):
        assert _value(tree, name) == before[name], name
    moved = [name for name, value in kconfig.value_snapshot(tree).items() if before[name] != value]
    assert len(moved) < 80, moved

    out = tmp_path / ".config"
    kconfig.write_verified(tree, out, [Request("MMU_NOTIFIER", "n", "--off")])
    values = kconfig.read_config_values(out)
    assert values.get("MMU_NOTIFIER", "n") == "n"
    for name in selectors:
        assert values.get(name, "n") == "n", name


def test_off_request_is_checked_by_verify(k612: kconfiglib.Kconfig, tmp_path: Path) -> None:
    result = composition.compose(k612, "tinyconfig", _requests(*NOTIFIER_ON), off=["MMU_NOTIFIER"])
    stale = tmp_path / "stale.config"
    stale.write_text("CONFIG_MMU_NOTIFIER=y\nCONFIG_DEVICE_PRIVATE=y\n")
    with pytest.raises(ConfigError, match=r"CONFIG_MMU_NOTIFIER: asked 'n' \(--off\), got 'y'"):
        kconfig.verify(k612, stale, result.requests)


def test_off_through_a_hidden_prompt(k612: kconfiglib.Kconfig) -> None:
    # BLOCK is `bool "Enable the block layer" if EXPERT` with default y: off means showing it first.
    kconfig.apply_base(k612, "defconfig")
    changes = resolver.turn_off(k612, "BLOCK")
    assert _value(k612, "BLOCK") == "n"
    assert [(c.symbol, c.new) for c in changes] == [("EXPERT", "y"), ("BLOCK", "n")]
    assert changes[0].reason == "shows the prompt of BLOCK"


def test_off_that_cannot_be_done_changes_nothing(k612: kconfiglib.Kconfig) -> None:
    kconfig.apply_base(k612, "defconfig")
    before = kconfig.value_snapshot(k612)
    with pytest.raises(ConfigError, match=r"cannot turn off CONFIG_MMU:.*no prompt"):
        resolver.turn_off(k612, "MMU")  # def_bool y on x86, nothing to answer
    with pytest.raises(ConfigError, match="its type is int"):
        resolver.turn_off(k612, "NR_CPUS")
    assert kconfig.value_snapshot(k612) == before


# -- on -----------------------------------------------------------------------------------------------


def test_on_from_tinyconfig_picks_a_selector(k612: kconfiglib.Kconfig, tmp_path: Path) -> None:
    kconfig.apply_base(k612, "tinyconfig")
    changes = resolver.turn_on(k612, "MMU_NOTIFIER")
    assert _value(k612, "MMU_NOTIFIER") == "y"
    final = changes[-1]
    assert final.symbol == "MMU_NOTIFIER" and final.reason.startswith("requested on, selected by ")
    chosen = final.reason.removeprefix("requested on, selected by ")
    assert chosen in _active_selectors(k612, "MMU_NOTIFIER")
    assert any(c.symbol == chosen and c.reason == "selects MMU_NOTIFIER" for c in changes)
    out = tmp_path / ".config"
    kconfig.write_verified(k612, out, [Request("MMU_NOTIFIER", "y", "--on")])
    assert kconfig.read_config_values(out)["MMU_NOTIFIER"] == "y"


def test_on_prefers_the_smallest_change(tree: kconfiglib.Kconfig) -> None:
    # test_hmm's dependencies are all there but RUNTIME_TESTING_MENU: by far the cheapest way.
    kconfig.apply_base(tree, "tinyconfig")
    kconfig.apply_requests(tree, _requests(BASE) + _text(HMM_NEEDS + "# CONFIG_RUNTIME_TESTING_MENU is not set"))
    changes = resolver.turn_on(tree, "MMU_NOTIFIER")
    assert [(c.symbol, c.new) for c in changes] == [
        ("RUNTIME_TESTING_MENU", "y"), ("TEST_HMM", "m"), ("MMU_NOTIFIER", "y")]
    assert changes[0].reason == "is needed by TEST_HMM which selects MMU_NOTIFIER"


def test_on_a_prompted_symbol_reports_unmet_dependencies(k612: kconfiglib.Kconfig) -> None:
    kconfig.apply_base(k612, "tinyconfig")
    kconfig.apply_requests(k612, _requests(BASE) + _text(HMM_NEEDS + "CONFIG_DEVICE_PRIVATE=n\n"))
    before = kconfig.value_snapshot(k612)
    with pytest.raises(ConfigError, match=r"cannot turn on CONFIG_TEST_HMM: it depends on .*, and "
                       r"DEVICE_PRIVATE\[=n\] and RUNTIME_TESTING_MENU\[=n\] are not met"):
        resolver.turn_on(k612, "TEST_HMM")
    assert kconfig.value_snapshot(k612) == before


# -- explain and diff ---------------------------------------------------------------------------------


def test_explain_lists_selectors_with_values(k612: kconfiglib.Kconfig, cloud_612: Path) -> None:
    kconfig.apply_base(k612, str(cloud_612))
    text = kconfig_explain.explain(k612, "MMU_NOTIFIER")
    lines = text.splitlines()
    assert lines[0].startswith("CONFIG_MMU_NOTIFIER (bool) = y")
    assert "prompt: none" in text
    active = next(line for line in lines if "selected by (active)" in line)
    for name in _active_selectors(k612, "MMU_NOTIFIER"):
        assert f"{name}[={_value(k612, name)}]" in active
    assert "TEST_HMM[=n]" in next(line for line in lines if "selected by (inactive)" in line)
    assert "value comes from: a select" in text

    kvm_x86 = kconfig_explain.explain(k612, "KVM_X86")
    assert "default in effect: KVM[=m] if" in kvm_x86 and "KVM_INTEL[=m]" in kvm_x86


def test_diff_configs(tmp_path: Path) -> None:
    a, b = tmp_path / "a.config", tmp_path / "b.config"
    a.write_text("CONFIG_KVM=m\nCONFIG_MMU_NOTIFIER=y\n# CONFIG_TEST_HMM is not set\nCONFIG_NR_CPUS=64\n")
    b.write_text("# CONFIG_KVM is not set\nCONFIG_NR_CPUS=8\nCONFIG_LOCALVERSION=\"-x\"\n")
    rows = kconfig_explain.diff_configs(a, b)
    assert rows == [("KVM", "m", "n"), ("LOCALVERSION", None, "-x"), ("MMU_NOTIFIER", "y", None),
                    ("NR_CPUS", "64", "8")]  # TEST_HMM: "not set" and absent are the same
    text = kconfig_explain.render_diff(rows, "a", "b")
    assert "CONFIG_MMU_NOTIFIER  y -> (absent)" in text and text.endswith("4 symbol(s) differ")
    assert kconfig_explain.diff_configs(a, a) == []


# -- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def preloaded(k612: kconfiglib.Kconfig, monkeypatch: pytest.MonkeyPatch) -> kconfiglib.Kconfig:
    """The CLI with the already-parsed 6.12 tree instead of parsing it again."""
    monkeypatch.setattr(kconfig, "load_tree", lambda *args, **kwargs: k612)
    return k612


def test_cli_make_off(preloaded: kconfiglib.Kconfig, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frag = tmp_path / "on.config"
    frag.write_text(HMM_NEEDS + HMM + "CONFIG_MMU_NOTIFIER=y\n")
    out = tmp_path / "off.config"
    rc = harness_cli.main(["config", "make", "--kernel-src", preloaded.srctree, "--fragment", str(frag),
                          "--off", "MMU_NOTIFIER", "-o", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "--off MMU_NOTIFIER:\n  CONFIG_TEST_HMM: m -> n (set; selects MMU_NOTIFIER)\n" in stdout
    assert f"{frag}:12: CONFIG_TEST_HMM=m" in stdout  # overridden, and said so
    assert kconfig.read_config_values(out).get("MMU_NOTIFIER", "n") == "n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off.config", "on.config"]


def test_cli_errors_are_one_paragraph_and_exit_2(preloaded: kconfiglib.Kconfig, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.config"
    assert harness_cli.main(["config", "make", "--kernel-src", str(tmp_path), "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"harness: {tmp_path} is not a Linux kernel source tree")
    rc = harness_cli.main(["config", "make", "--kernel-src", preloaded.srctree, "--on", "NO_SUCH", "-o", str(out)])
    assert rc == 2
    assert "unknown Kconfig symbol CONFIG_NO_SUCH" in capsys.readouterr().err
    assert not out.exists()


def test_cli_explain_and_diff(preloaded: kconfiglib.Kconfig, cloud_612: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    rc = harness_cli.main(["config", "explain", "MMU_NOTIFIER", "--kernel-src", preloaded.srctree,
                          "--config", str(cloud_612)])
    assert rc == 0 and "selected by (active): " in capsys.readouterr().out
    other = tmp_path / "other.config"
    other.write_text(cloud_612.read_text().replace("CONFIG_KVM=m", "# CONFIG_KVM is not set"))
    assert harness_cli.main(["config", "diff", str(cloud_612), str(other)]) == 0
    assert "CONFIG_KVM" in capsys.readouterr().out


def test_a_set_string_reads_as_a_fragment_line_does():
    # `--set CONFIG_LOCALVERSION="-x"` once kept its quotes: the kernel built for 15 minutes as release
    # 7.3.4"-x", which the harness then refused as no release
    assert kconfig.parse_setting('LOCALVERSION="-x"') == kconfig.parse_setting("CONFIG_LOCALVERSION=-x")
    assert kconfig.parse_setting('LOCALVERSION="-x"').value == "-x"
    assert kconfig.parse_setting('FOO="a\\"b"').value == 'a"b'
    with pytest.raises(kconfig.ConfigError, match="unterminated string"):
        kconfig.parse_setting('LOCALVERSION="-x')
