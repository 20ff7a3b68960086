"""Where the tests find real kernel trees."""

from __future__ import annotations

import os
import subprocess
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
    if os.environ.get("HARNESS_FETCH_TREES") or Path(f"/usr/src/linux-source-{series}.tar.xz").exists():
        from harness.kernel.source import debian_tree

        # unpacks the installed tarball once (about 15 s); with HARNESS_FETCH_TREES (make test), installs
        # or fetches the package first (7.x: trixie-backports, harness/kernel/debian.py)
        return debian_tree(series).path
    pytest.skip(f"no {series} kernel tree: `harness kernel --kernel-src debian:{series}` fetches it (or set "
                f"HARNESS_LINUX_{series.replace('.', '_')}, or HARNESS_FETCH_TREES=1 to let the tests fetch it)")


def distro_config(series: str, dest: Path) -> Path:
    """Debian's cloud-amd64 config of a series: /usr/src/linux-config-X.Y when installed, else fetched."""
    import lzma

    from harness.kernel import debian

    name = "config.amd64_none_cloud-amd64.xz"
    packaged = Path(f"/usr/src/linux-config-{series}") / name
    if not packaged.exists():
        if not os.environ.get("HARNESS_FETCH_TREES"):
            pytest.skip(f"no Debian {series} cloud config: apt-get install linux-config-{series} "
                        "(or HARNESS_FETCH_TREES=1)")
        deb, _ = debian.fetch(f"linux-config-{series}")
        unpacked = dest / "deb"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        packaged = unpacked / "usr/src" / f"linux-config-{series}" / name
    out = dest / f"config-{series}-cloud-amd64"
    out.write_bytes(lzma.decompress(packaged.read_bytes()))
    return out
