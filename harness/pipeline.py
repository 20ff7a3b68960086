"""From a kernel source to a bootable (kernel, image) pair: the stages before QEMU, cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import build as kbuild
from . import image as kimage
from . import paths, source


@dataclass(frozen=True)
class Prepared:
    tree: source.KernelTree
    build: kbuild.KernelBuild
    image: kimage.Image
    notifier: str  # "on" | "off"
    timings: dict[str, float] = field(default_factory=dict)


def fragments_for(notifier: str) -> tuple:
    frags = paths.CONFIGS / "fragments"
    if notifier == "on":
        return (frags / "base.config", frags / "drivers.config", frags / "mmu-notifier-on.config")
    raise ValueError(f"notifier must be 'on' (got {notifier!r})")


def prepare(ksrc: str | None = None, notifier: str = "on", settings: tuple[str, ...] = ()) -> Prepared:
    timings = {}
    t = time.monotonic()
    tree = source.resolve(ksrc)
    timings["source_s"] = time.monotonic() - t
    t = time.monotonic()
    spec = kbuild.ConfigSpec("tinyconfig", fragments_for(notifier), settings)
    kb = kbuild.build_kernel(tree, spec)
    timings["kernel_s"] = time.monotonic() - t
    t = time.monotonic()
    img = kimage.build_image(kb)
    timings["image_s"] = time.monotonic() - t
    return Prepared(tree, kb, img, notifier, {k: round(v, 2) for k, v in timings.items()})
