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

from harness import atomic, paths
from harness.kernel import source
from harness.kernel.build import KernelBuild, build_kernel, content_key
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
            fragments: tuple[str, ...] = ()) -> Prepared:
    timings: dict[str, float] = {}
    # One process prepares a given tree at a time: parallel runs (matrix cells, the fault tests)
    # share its unpacked source, scratch and build directories. Other trees go ahead meanwhile.
    with atomic.locked(_tree_lock(ksrc)):
        with _timed(timings, "source_s"):
            tree = source.resolve(ksrc)
        with _timed(timings, "config_s"):
            configured = configure(tree, config_spec(notifier, tree.series, settings, fragments))
        with _timed(timings, "kernel_s"):
            kernel = build_kernel(configured)
        with _timed(timings, "image_s"):
            image = build_image(kernel)
    return Prepared(tree, kernel, image, notifier, fragments, timings)


def _tree_lock(ksrc: str | None) -> Path:
    """The lock file of a tree, named from how it was asked for (resolving it is a stage under the lock)."""
    return paths.cache_root() / "locks" / f"{content_key(ksrc or f'debian:{source.DEFAULT_SERIES}')}.lock"


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the block's wall time in seconds under `name` (tuxmake's measure_duration, in small)."""
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 2)
