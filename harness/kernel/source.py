"""Kernel source trees: Debian's linux-source-X.Y packages, or the user's own tree (KSRC=).

A tree's identity (version, and git commit when it is a git tree) goes into cache keys and results.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, locks, paths
from harness.kernel import debian
from harness.kernel.kconfig import tree_version

DEFAULT_SERIES = "6.12"
STAMP = ".harness-package-version"  # in an unpacked Debian tree, written last: the package version
IMPORTED = ".harness-imported.json"  # a pruned tree from a build artifact (harness/kernel/artifact.py)


@dataclass(frozen=True)
class KernelTree:
    path: Path
    version: str  # e.g. 6.12.117, from the tree's Makefile
    identity: str  # e.g. "debian:linux-source-6.12=6.12.57-1" or "git:<sha>" or "git:<sha>-dirty"
    immutable: bool  # a Debian tree never changes under us; a user's tree may
    base: KernelTree | None = None  # a patched copy's base tree (harness/kernel/patches.py)
    changed: tuple[str, ...] = ()  # the files its patches touch, relative to the tree
    imported: bool = False  # a pruned tree from a build artifact: its builds run, nothing else builds
    owned: bool = False  # a git clone the harness made and alone edits (harness bisect): built inside, like Debian's

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])


BISECT_CLONES = ("src", "bisect")  # under the cache: harness bisect's private clones (harness/bisect/git.py)


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
    return KernelTree(path, version, identity, immutable=False,
                      owned=path.is_relative_to(paths.cache_root().joinpath(*BISECT_CLONES)))


def debian_tree(series: str = DEFAULT_SERIES) -> KernelTree:
    """Debian's linux-source-SERIES, unpacked into the cache once.

    From /usr/src when the package is installed, else installed from the system's apt, else fetched from
    a suite the system does not carry (7.x from trixie-backports: harness/kernel/debian.py).
    """
    package = f"linux-source-{series}"
    dest = paths.cache_root() / "src" / package
    stamp = dest / STAMP  # written last: a tree without it is incomplete or stale
    if (dest / IMPORTED).exists() and stamp.exists():
        # From `harness kernel --import`: never install or unpack the package over it (a CI cell has no source)
        return KernelTree(dest, tree_version(dest), f"debian:{package}={stamp.read_text()}", immutable=True,
                          imported=True)
    tarball = Path(f"/usr/src/{package}.tar.xz")
    if tarball.exists() and stamp.exists() and stamp.read_text() == debian.installed_version(package):
        return _debian(dest, stamp.read_text(), package)  # unpacked and current: no lock, no wait
    if not tarball.exists() and stamp.exists() and not debian.candidate(package):
        return _debian(dest, stamp.read_text(), package)  # fetched (7.x) and unpacked before: never changes
    # Installing, fetching, unpacking: one process per tree, and none while a build reads it (prepare.py
    # holds this lock shared from the config stage to the image).
    with locks.locked(tree_lock(dest), f"installing and unpacking {package} into {dest}"):
        if not tarball.exists() and debian.candidate(package):
            debian.install(package)
        if tarball.exists():
            version = debian.installed_version(package) or "unknown"
        elif stamp.exists():  # fetched and unpacked before: a Debian package version never changes its files
            version = stamp.read_text()
        else:
            deb, version = debian.fetch(package)
            tarball = dest.with_name(f"{package}.tar.xz")
            debian.extract_tarball(deb, tarball)
        if not stamp.exists() or stamp.read_text() != version:
            print(f"unpacking {tarball} into {dest} ...", flush=True)
            with atomic.staged_dir(dest) as tmp, tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="tar")
                (top,) = [p for p in tmp.iterdir()]  # the tarball holds one directory, linux-source-X.Y
                for child in top.iterdir():
                    child.rename(tmp / child.name)
                top.rmdir()
                (tmp / stamp.name).write_text(version)
            if not tarball.is_relative_to("/usr/src"):
                tarball.unlink()  # extracted from a fetched .deb only to be unpacked
    return _debian(dest, version, package)


def _debian(dest: Path, version: str, package: str) -> KernelTree:
    return KernelTree(dest, tree_version(dest), f"debian:{package}={version}", immutable=True)


def tree_lock(path: Path) -> Path:
    """The lock of a tree's files: exclusive to unpack it, shared while a build reads it."""
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return paths.cache_root() / "locks" / f"tree-{path.name}-{key}.lock"


def resolve(ksrc: str | None) -> KernelTree:
    """KSRC=/path (a user tree), KSRC=debian:6.1 (a Debian source package), or the default (patched trees:
    trees.py)."""
    if not ksrc:
        return debian_tree()
    if ksrc.startswith("debian:"):
        return debian_tree(ksrc.removeprefix("debian:"))
    if ksrc.startswith("patched:"):
        raise ValueError(f"{ksrc}: a patched tree is resolved by harness.kernel.trees.resolve")
    return user_tree(Path(ksrc))
