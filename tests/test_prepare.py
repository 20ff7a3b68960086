"""The stages before QEMU, chained and cached, with no kernel: make, kconfiglib and the image are stood in for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.kernel import build, composition, config, prepare
from harness.kernel.build import KernelBuild
from harness.kernel.config import ConfigSpec, Configured
from harness.kernel.image import Image
from harness.kernel.source import KernelTree


def _tree(immutable: bool) -> KernelTree:
    return KernelTree(Path("/src/linux"), "6.12.117", "debian:linux-source-6.12=6.12.117-1", immutable)


def test_prepare_runs_source_config_build_image_in_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))  # the per-tree lock goes there
    tree = _tree(immutable=True)
    configured = Configured(tree, tmp_path / "x.config", "k", "why\n")
    kernel = KernelBuild(tree, tmp_path / "build", "k", "6.12.117")
    image = Image(tmp_path / "initramfs", tmp_path / "key.pub", tmp_path)
    calls: list[tuple[str, tuple[object, ...]]] = []

    def stage(name: str, result: object) -> Callable[..., object]:
        """A stand-in for a stage that records what it was given."""

        def run(*args: object) -> object:
            calls.append((name, args))
            return result

        return run

    monkeypatch.setattr(prepare.source, "resolve", stage("source", tree))
    monkeypatch.setattr(prepare, "configure", stage("config", configured))
    monkeypatch.setattr(prepare, "build_kernel", stage("build", kernel))
    monkeypatch.setattr(prepare, "build_image", stage("image", image))

    prepared = prepare.prepare("debian:6.12", "off", ("NR_CPUS=4",), ("debug/kasan",))

    assert [name for name, _ in calls] == ["source", "config", "build", "image"]
    assert calls[0][1] == ("debian:6.12",)
    assert calls[1][1] == (tree, config.config_spec("off", "6.12", ("NR_CPUS=4",), ("debug/kasan",)))
    assert calls[2][1] == (configured,) and calls[3][1] == (kernel,)
    assert (prepared.tree, prepared.build, prepared.image) == (tree, kernel, image)
    assert (prepared.notifier, prepared.fragments) == ("off", ("debug/kasan",))
    assert list(prepared.timings) == ["source_s", "config_s", "kernel_s", "image_s"]


def _fake_compose(tmp_path: Path, calls: list[ConfigSpec]) -> Callable[..., tuple[Path, str, composition.Composition]]:
    """config.compose without kconfiglib or make: a scratch .config whose text depends on the spec."""

    def compose(tree: KernelTree, spec: ConfigSpec, log: Path) -> tuple[Path, str, composition.Composition]:
        calls.append(spec)
        scratch = tmp_path / "scratch.config"
        scratch.write_text(f"CONFIG_NR_CPUS={len(spec.settings) + 1}\n")
        return scratch, build.content_key(scratch.read_text()), config.describe_composition(
            spec, composition.Composition([], [], [], []))

    return compose


def test_configure_remembers_what_a_debian_tree_led_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    calls: list[ConfigSpec] = []
    monkeypatch.setattr(config, "compose", _fake_compose(tmp_path, calls))
    spec = config.config_spec("on", "6.12")

    first = config.configure(_tree(immutable=True), spec)
    (tmp_path / "scratch.config").write_text("CONFIG_NR_CPUS=99\n")  # the next composition's scratch
    again = config.configure(_tree(immutable=True), spec)

    assert len(calls) == 1  # kconfiglib ran once
    assert again == first and first.config.read_text() == "CONFIG_NR_CPUS=1\n"
    assert first.why.startswith("base: tinyconfig\nfragment: ")
    config.configure(_tree(immutable=False), spec)
    config.configure(_tree(immutable=False), spec)
    assert len(calls) == 3  # a user's tree may change under us: composed every time


def test_build_kernel_of_a_finished_debian_build_runs_no_make(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    tree = _tree(immutable=True)
    outdir = tmp_path / "builds" / "6.12.117-abc"
    outdir.mkdir(parents=True)
    (outdir / build.STAMP).write_text(json.dumps({"release": "6.12.117"}))
    monkeypatch.setattr(build, "_make_kernel", lambda *args: pytest.fail("make ran for a finished build"))

    kernel = build.build_kernel(Configured(tree, tmp_path / "final.config", "abc", "why it is so\n"))

    assert kernel == KernelBuild(tree, outdir, "abc", "6.12.117")
    assert (outdir / "harness-config-why.txt").read_text() == "why it is so\n"
