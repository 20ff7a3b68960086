"""From a kernel source to a bootable (kernel, image) pair: the stages before QEMU, in a straight line.

source -> config -> build -> image: each stage is one call that takes the previous stage's result
(a KernelTree, a ConfigSpec for it, a Configured, a KernelBuild) and returns its own, and each is
timed the same way into Prepared.timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import locks, paths
from harness.kernel import source, trees
from harness.kernel.arch import HOST
from harness.kernel.build import KernelBuild, build_kernel, build_lock
from harness.kernel.config import config_spec, configure
from harness.kernel.image import Image, build_image


@dataclass(frozen=True)
class Prepared:
    tree: source.KernelTree
    build: KernelBuild
    image: Image
    notifier: str  # "on" | "off"
    fragments: tuple[str, ...] = ()  # extra fragments asked for (--fragment), as given
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: source_s, config_s, ...


def prepare(ksrc: str | None = None, notifier: str = "on", settings: tuple[str, ...] = (),
            fragments: tuple[str, ...] = (), arch: str = HOST) -> Prepared:
    timings: dict[str, float] = {}
    tree, kernel = prepare_build(ksrc, notifier, settings, fragments, arch, timings)
    with _timed(timings, "image_s"), locks.locked(source.tree_lock(tree.path), f"reading {tree.path}", shared=True), \
            locks.locked(build_lock(kernel.dir), f"making an image from {kernel.dir}", shared=True), \
            locks.locked(_image_lock(kernel), f"making the image (guest modules, initramfs) of {kernel.dir}"):
        image = build_image(kernel)
    return Prepared(tree, kernel, image, notifier, fragments, timings)


def prepare_build(ksrc: str | None = None, notifier: str = "on", settings: tuple[str, ...] = (),
                  fragments: tuple[str, ...] = (), arch: str = HOST,
                  timings: dict[str, float] | None = None) -> tuple[source.KernelTree, KernelBuild]:
    """The stages before the image: the tree, its configuration for `arch`, the build."""
    timings = {} if timings is None else timings
    # Each lock guards one thing, so that a ready kernel never waits for another config's build:
    # unpacking a tree (exclusive, in source.py; taken only when there is something to unpack), reading
    # it (shared, from here to the image), composing in its scratch directory (config.py), one build
    # directory (build.py), one image. A wait of more than a second says who holds what (locks.locked).
    with _timed(timings, "source_s"):
        tree = trees.resolve(ksrc)
    with locks.locked(source.tree_lock(tree.path), f"reading {tree.path} for a build", shared=True):
        with _timed(timings, "config_s"):
            configured = configure(tree, config_spec(notifier, tree.series, settings, fragments, arch))
        with _timed(timings, "kernel_s"):
            kernel = build_kernel(configured)
    return tree, kernel


def _image_lock(kernel: KernelBuild) -> Path:
    """Images of one build share its guest-module and modules_install directories: one at a time."""
    return paths.cache_root() / "locks" / f"image-{kernel.dir.name}.lock"


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the block's wall time in seconds under `name` (tuxmake's measure_duration, in small)."""
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 2)
