"""Patched trees: a base tree plus a patch series, as a tree of the cache that never changes.

A series is `git format-patch` files, an mbox of several (what `b4 am` writes), or a commit range A..B
of a git base, read as bytes and its paths checked by harness/kernel/series.py. The patched tree is a
copy of the base whose unchanged files are hard links (a Debian tree and a snapshot of a git HEAD are
never edited in place), and it is named by its base and the patches' bytes: `patched:<key>` is a KSRC
like `debian:6.12`. Its builds start from a copy of the base's build of the same .config
(harness/kernel/build.py:build_dir, seed_build), so a one-file patch recompiles one file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from harness import atomic, paths
from harness.kernel import source
from harness.kernel.build import content_key
from harness.kernel.kconfig import tree_version
from harness.kernel.series import HARNESS_NAMES, Patch, PatchError, check_paths, check_specs, read_series, split_mbox
from harness.kernel.source import KernelTree

KSRC_PREFIX = "patched:"
TREE_STAMP = ".harness-tree.json"  # written last: a patched tree without it is unfinished
# Reading a series (harness/kernel/series.py) is part of this module's interface too
__all__ = ["KSRC_PREFIX", "TREE_STAMP", "Patch", "PatchError", "cached_tree", "check_specs", "describe", "fixed_base",
           "patched_tree", "read_series", "split_mbox"]


def fixed_base(ksrc: str | None) -> tuple[str, KernelTree]:
    """A KSRC and tree that cannot change while compared: a Debian (or patched) tree as it is, a git tree's
    HEAD as a snapshot in the cache (uncommitted changes are not part of it: the caller says so)."""
    tree = _resolve(ksrc)
    if tree.immutable:
        return ksrc or f"debian:{tree.series}", tree
    if not tree.identity.startswith("git:"):
        raise PatchError(f"{tree.path} is neither a Debian tree nor a git tree: compare needs a base that "
                         "cannot change under it (commit the tree to git, or give its changes with --patch)")
    sha = tree.identity.removeprefix("git:").removesuffix("-dirty")
    key = content_key("git", sha)
    dest = _tree_dir(key)
    if not (dest / TREE_STAMP).exists():
        print(f"snapshotting {tree.path} at {sha[:12]} into {dest} ...", flush=True)
        with atomic.staged_dir(dest) as tmp:
            archive = subprocess.Popen(["git", "-C", str(tree.path), "archive", "--format=tar", sha],
                                       stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=True)
            if archive.wait() != 0:
                raise PatchError(f"git archive {sha} in {tree.path} failed")
            (tmp / TREE_STAMP).write_text(json.dumps({"identity": f"git:{sha}", "base": None,
                                                      "source": str(tree.path), "patches": []}))
    return f"{KSRC_PREFIX}{key}", cached_tree(f"{KSRC_PREFIX}{key}")


def patched_tree(base: KernelTree, base_ksrc: str, series: list[Patch]) -> tuple[str, KernelTree]:
    """The base with the series applied, in order; its KSRC (`patched:<key>`) and the tree.

    Every path of every patch is checked first (series.check_paths): a series naming one outside the
    tree is refused whole before anything is copied. A patch that does not apply stops here, naming the
    patch and git apply's words (file and hunk), and nothing is left in the cache.
    """
    check_paths(series, base.path)
    key = content_key(base.identity, *(p.data for p in series))
    ksrc = f"{KSRC_PREFIX}{key}"
    dest = _tree_dir(key)
    if (dest / TREE_STAMP).exists():
        return ksrc, cached_tree(ksrc)
    print(f"applying {len(series)} patch(es) to a copy of {base.path} ...", flush=True)
    with atomic.staged_dir(dest) as tmp:
        # not the harness's files, nor .tmp_PID (Kbuild's try-run makes and removes it while a build runs)
        entries = [p for p in base.path.iterdir() if not p.name.startswith(HARNESS_NAMES) and p.name != ".git"]
        subprocess.run(["cp", "-al", "--", *map(str, entries), str(tmp)], check=True)
        for i, patch in enumerate(series, 1):
            _apply(tmp, patch, f"patch {i}/{len(series)}")
        _check_links(tmp, series)
        applied = [{"origin": p.origin, "subject": p.subject, "sha256": p.sha256} for p in series]
        (tmp / TREE_STAMP).write_text(json.dumps({
            "identity": f"{base.identity}+{key}", "base": base_ksrc, "base_identity": base.identity,
            "patches": applied, "changed": sorted({f for p in series for f in p.touched()})}, indent=1))
    return ksrc, cached_tree(ksrc)


def _apply(tree: Path, patch: Patch, which: str) -> None:
    for name in patch.touched():
        _unshare(tree, name, which)
    # outside any repository: git apply then works as patch(1) on the directory it runs in; the patch's
    # bytes go in on stdin, as they are
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    proc = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=tree, env=env, input=patch.data,
                          capture_output=True)
    if proc.returncode != 0:
        raise PatchError(f"{which} ({patch.origin}: {patch.subject}) does not apply:\n"
                         f"{proc.stderr.decode(errors='replace').strip()}")


def _check_links(tree: Path, series: list[Patch]) -> None:
    """A symlink the series made must stay in the tree: the harness (root) reads the tree's files."""
    for patch in series:
        for name in patch.touched():
            path = tree / name
            if path.is_symlink() and not path.resolve().is_relative_to(tree.resolve()):
                raise PatchError(f"{patch.origin} ({patch.subject}): {name} becomes a symlink out of the tree "
                                 f"(to {os.readlink(path)})")


def _unshare(tree: Path, name: str, which: str) -> None:
    """Give a hard-linked file its own copy before it is patched: the base tree must not change.

    check_paths() has refused any name that leaves the tree; this checks again, on the copy as the
    earlier patches left it, and never follows a symlink: a file outside the tree is never replaced."""
    path = tree / name
    root = os.path.realpath(tree)
    if os.path.commonpath([root, os.path.realpath(path.parent)]) != root:
        raise PatchError(f"{which}: {name} is outside the tree; nothing of it was changed")
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        copy = path.with_name(f".{path.name}.unshared")
        shutil.copy2(path, copy, follow_symlinks=False)
        os.replace(copy, path)


def _tree_dir(key: str) -> Path:
    return paths.cache_root() / "src" / "patched" / key


def _resolve(ksrc: str | None) -> KernelTree:
    """A base of either kind: what trees.resolve() does (it imports this module, so it cannot be called here)."""
    return cached_tree(ksrc) if ksrc and ksrc.startswith(KSRC_PREFIX) else source.resolve(ksrc)


def cached_tree(ksrc: str) -> KernelTree:
    """The KernelTree of a `patched:<key>` KSRC made by patched_tree()."""
    dest = _tree_dir(ksrc.removeprefix(KSRC_PREFIX))
    try:
        meta = json.loads((dest / TREE_STAMP).read_text())
    except FileNotFoundError:
        raise PatchError(f"{ksrc}: no such patched tree in {dest.parent} (harness compare makes them)") from None
    base = _resolve(meta["base"]) if meta["base"] else None
    return KernelTree(dest, tree_version(dest), meta["identity"], immutable=True, base=base,
                      changed=tuple(meta.get("changed", ())))


def describe(tree: KernelTree) -> list[dict[str, str]]:
    """The patches of a patched tree, as applied (origin and subject), or [] for any other tree."""
    stamp = tree.path / TREE_STAMP
    if not stamp.exists():
        return []
    return list(json.loads(stamp.read_text())["patches"])
