"""A process that prepares a kernel with the real locks (harness/kernel/prepare.py, build.py) and stand-ins
for the slow parts: `make` sleeps, the config and image are given. Run by tests/test_locks.py as
`python -m tests.lock_worker CACHE CONFIG_KEY MAKE_SECONDS`; prints what it did as JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from harness import atomic
from harness.kernel import build, prepare
from harness.kernel.config import Configured
from harness.kernel.image import Image
from harness.kernel.source import KernelTree


def main(cache: Path, key: str, make_s: float) -> None:
    os.environ["HARNESS_CACHE"] = str(cache)
    tree = KernelTree(cache / "src" / "linux", "6.12.117", "debian:linux-source-6.12=6.12.117-1", immutable=True)

    tree.path.mkdir(parents=True, exist_ok=True)  # a Debian tree's builds live inside it (build.build_dir)

    def make(tree: KernelTree, outdir: Path, config: Path, key: str, jobs: int | None, seeded: str | None,
             arch: object = None) -> None:
        with open(outdir / "build.log", "a") as log:
            log.write(f"  CC      mm/rmap.o ({key})\n")
        began = time.time()
        time.sleep(make_s)
        with open(cache / "makes.log", "a") as f:
            f.write(f"{key} {os.getpid()} {began} {time.time()}\n")
        atomic.write_text(outdir / build.STAMP, json.dumps({"release": "6.12.117"}))

    prepare.source.resolve = lambda ksrc: tree  # type: ignore[assignment]
    (cache / f"{key}.config").write_text("CONFIG_X86_64=y\n")
    prepare.configure = lambda tree, spec: Configured(tree, cache / f"{key}.config", key, "why\n")  # type: ignore
    prepare.build_image = lambda kernel: Image(cache / "initramfs", cache / "key.pub", cache)  # type: ignore
    build._make_kernel = make  # type: ignore[assignment]
    started = time.time()
    prepared = prepare.prepare("debian:6.12", "on")
    print(json.dumps({"pid": os.getpid(), "started": started, "ended": time.time(), "build": str(prepared.build.dir)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
