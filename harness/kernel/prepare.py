"""From a kernel source to a bootable (kernel, image) pair: the stages before QEMU, cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic, paths
from harness.kernel import build as kbuild
from harness.kernel import image as kimage
from harness.kernel import source
from harness.kernel.kconfig import ConfigError


@dataclass(frozen=True)
class Prepared:
    tree: source.KernelTree
    build: kbuild.KernelBuild
    image: kimage.Image
    notifier: str  # "on" | "off"
    fragments: tuple[str, ...] = ()  # extra fragments asked for (--fragment), as given
    timings: dict[str, float] = field(default_factory=dict)


NOTIFIER_AXIS = ("on", "off")


def fragment_path(name: str) -> Path:
    """An extra fragment: NAME is configs/fragments/NAME.config (e.g. debug/kasan); else a path."""
    frags = paths.CONFIGS / "fragments"
    for path in (frags / f"{name}.config", Path(name)):
        if path.is_file():
            return path
    known = sorted(str(p.relative_to(frags).with_suffix("")) for p in frags.glob("debug/*.config"))
    raise ConfigError(f"cannot read config file {name}: neither {frags}/{name}.config nor a file of that path "
                      f"(fragments made for this: {', '.join(known)})")


def config_spec(notifier: str, series: str = "", settings: tuple[str, ...] = (),
                extra: tuple[str, ...] = ()) -> kbuild.ConfigSpec:
    """The same tree and fragments either way; "off" asks the engine to turn off every selector.

    configs/fragments/series/<X.Y>.config, where it exists, adds what that kernel series needs to
    give the same guest (e.g. 6.1's KVM depends on HIGH_RES_TIMERS). `extra` fragments (a debug
    kernel: debug/kasan) come last, checked like the rest.
    """
    frags = paths.CONFIGS / "fragments"
    common = (frags / "base.config", frags / "drivers.config")
    per_series = frags / "series" / f"{series}.config"
    common += (per_series,) if per_series.exists() else ()
    common += tuple(fragment_path(name) for name in extra)
    if notifier == "on":
        return kbuild.ConfigSpec("tinyconfig", (*common, frags / "mmu-notifier-on.config"), settings)
    if notifier == "off":
        return kbuild.ConfigSpec("tinyconfig", common, settings, off=("MMU_NOTIFIER",))
    raise ValueError(f"notifier must be one of {NOTIFIER_AXIS}, got {notifier!r}")


def fragments_for(notifier: str, series: str = "") -> tuple[Path, ...]:
    return config_spec(notifier, series).fragments


def prepare(ksrc: str | None = None, notifier: str = "on", settings: tuple[str, ...] = (),
            fragments: tuple[str, ...] = ()) -> Prepared:
    timings = {}
    # One process prepares a given tree at a time: parallel runs (matrix cells, the fault tests)
    # share its unpacked source, scratch and build directories. Other trees go ahead meanwhile.
    tree_name = ksrc or f"debian:{source.DEFAULT_SERIES}"
    lock = paths.cache_root() / "locks" / f"{kbuild.content_key(tree_name)}.lock"
    with atomic.locked(lock):
        t = time.monotonic()
        tree = source.resolve(ksrc)
        timings["source_s"] = time.monotonic() - t
        t = time.monotonic()
        kb = kbuild.build_kernel(tree, config_spec(notifier, tree.series, settings, fragments))
        timings["kernel_s"] = time.monotonic() - t
        t = time.monotonic()
        img = kimage.build_image(kb)
        timings["image_s"] = time.monotonic() - t
    return Prepared(tree, kb, img, notifier, fragments, {k: round(v, 2) for k, v in timings.items()})
