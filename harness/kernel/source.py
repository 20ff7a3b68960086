"""Kernel source trees: Debian's linux-source-X.Y packages, or the user's own tree (KSRC=).

A tree's identity (version, and git commit when it is a git tree) goes into cache keys and results.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, paths
from harness.kernel.kconfig import tree_version

DEFAULT_SERIES = "6.12"


class SourceError(Exception):
    pass


@dataclass(frozen=True)
class KernelTree:
    path: Path
    version: str  # e.g. 6.12.117, from the tree's Makefile
    identity: str  # e.g. "debian:linux-source-6.12=6.12.57-1" or "git:<sha>" or "git:<sha>-dirty"
    immutable: bool  # a Debian tree never changes under us; a user's tree may

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])


def user_tree(path: Path) -> KernelTree:
    path = path.expanduser().resolve()
    version = tree_version(path)
    identity = f"path:{path}"
    if (path / ".git").exists():
        git = ["git", "-C", str(path)]
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if sha:
            dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            identity = f"git:{sha}{'-dirty' if dirty else ''}"
    return KernelTree(path, version, identity, immutable=False)


def debian_tree(series: str = DEFAULT_SERIES) -> KernelTree:
    """Unpack /usr/src/linux-source-SERIES.tar.xz into the cache once; install the package if allowed."""
    package = f"linux-source-{series}"
    tarball = Path(f"/usr/src/{package}.tar.xz")
    if not tarball.exists():
        _install_package(package)
    pkg_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                 capture_output=True, text=True).stdout.strip() or "unknown"
    dest = paths.cache_root() / "src" / package
    stamp = dest / ".harness-package-version"  # written last: a tree without it is incomplete or stale
    if not stamp.exists() or stamp.read_text() != pkg_version:
        print(f"unpacking {tarball} into {dest} ...", flush=True)
        with atomic.staged_dir(dest) as tmp, tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="tar")
            (top,) = [p for p in tmp.iterdir()]  # the tarball holds one directory, linux-source-X.Y
            for child in top.iterdir():
                child.rename(tmp / child.name)
            top.rmdir()
            (tmp / stamp.name).write_text(pkg_version)
    return KernelTree(dest, tree_version(dest), f"debian:{package}={pkg_version}", immutable=True)


def resolve(ksrc: str | None) -> KernelTree:
    """KSRC=/path (a user tree), KSRC=debian:6.1 (a Debian source package), or the default."""
    if not ksrc:
        return debian_tree()
    if ksrc.startswith("debian:"):
        return debian_tree(ksrc.removeprefix("debian:"))
    return user_tree(Path(ksrc))


def _install_package(package: str) -> None:
    if os.geteuid() != 0:
        raise SourceError(f"{package} is not installed. As root: apt-get install {package}  "
                          "(or give your own tree with KSRC=/path/to/linux)")
    print(f"installing {package} ...", flush=True)
    proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SourceError(f"apt-get install {package} failed:\n{proc.stderr.strip()[-2000:]}")
