"""Where the tests find real kernel trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import paths


def kernel_tree(series: str) -> Path:
    """The unpacked Debian tree of a kernel series, for tests that parse real Kconfig; skip when absent."""
    env = os.environ.get(f"HARNESS_LINUX_{series.replace('.', '_')}")
    if env:
        return Path(env)
    path = paths.cache_root() / "src" / f"linux-source-{series}"
    if (path / "Kconfig").is_file():
        return path
    if Path(f"/usr/src/linux-source-{series}.tar.xz").exists():
        from harness.kernel.source import debian_tree

        return debian_tree(series).path  # unpacks the installed tarball once (about 15 s)
    pytest.skip(f"no {series} kernel tree: apt-get install linux-source-{series} (or set "
                f"HARNESS_LINUX_{series.replace('.', '_')})")
