"""Patched trees: a base tree plus a patch series, as a tree of the cache that never changes.

A series is `git format-patch` files, an mbox of several (what `b4 am` writes), or a commit range A..B
of a git base. The patched tree is a copy of the base whose unchanged files are hard links (a Debian
tree and a snapshot of a git HEAD are never edited in place), and it is named by its base and the
patches' bytes: `patched:<key>` is a KSRC like `debian:6.12`. Its builds start from a copy of the
base's build of the same .config (harness/kernel/build.py:build_dir, seed_build), so a one-file patch
recompiles one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, paths
from harness.errors import UserError
from harness.kernel.build import IN_TREE_PREFIX, content_key
from harness.kernel.kconfig import tree_version
from harness.kernel.source import KernelTree, resolve

KSRC_PREFIX = "patched:"
TREE_STAMP = ".harness-tree.json"  # written last: a patched tree without it is unfinished
_MBOX_FROM = re.compile(r"^From [0-9a-f]{40} ", re.MULTILINE)  # git's mbox separator line
_SUBJECT = re.compile(r"^Subject: (.*(?:\n[ \t].*)*)", re.MULTILINE)
_TOUCHED = re.compile(r"^(?:---|\+\+\+) (?:a|b)/(\S+)", re.MULTILINE)


class PatchError(UserError):
    pass


@dataclass(frozen=True)
class Patch:
    origin: str  # the file it came from, and its place in an mbox: "0001-x.patch" or "series.mbox#2"
    subject: str
    text: str

    def touched(self) -> list[str]:
        return sorted(set(_TOUCHED.findall(self.text)))


def read_series(specs: list[str], base: KernelTree) -> list[Patch]:
    """The patches of --patch arguments, in order: files (one patch or an mbox of several) or A..B."""
    series: list[Patch] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            series += split_mbox(path.read_text(errors="replace"), path.name)
        elif ".." in spec and not path.exists():
            series += split_mbox(_format_patch(base, spec), spec)
        else:
            raise PatchError(f"--patch {spec}: no such file (nor a commit range A..B of a git tree)")
    if not series:
        raise PatchError("the series has no patches")
    return series


def split_mbox(text: str, origin: str) -> list[Patch]:
    """One patch per message of an mbox; a file with no mbox separator is one patch."""
    starts = [m.start() for m in _MBOX_FROM.finditer(text)] or [0]
    if starts[0] != 0 and text[:starts[0]].strip():
        starts.insert(0, 0)
    chunks = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    out = []
    for i, chunk in enumerate(chunks, 1):
        if "\n--- " not in chunk and "\ndiff --git " not in chunk and not chunk.startswith("--- "):
            if len(chunks) > 1 and i == 1 and "\nSubject:" in chunk:
                continue  # a cover letter: no diff
            raise PatchError(f"{origin}: {'message ' + str(i) + ' ' if len(chunks) > 1 else ''}has no diff")
        m = _SUBJECT.search(chunk)
        subject = re.sub(r"\s+", " ", m[1]).strip() if m else chunk.strip().splitlines()[0][:80]
        subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
        out.append(Patch(f"{origin}#{i}" if len(chunks) > 1 else origin, subject, chunk))
    return out


def _format_patch(base: KernelTree, commit_range: str) -> str:
    if not (base.path / ".git").exists():
        raise PatchError(f"--patch {commit_range}: a commit range needs a git base tree, {base.path} is not one")
    proc = subprocess.run(["git", "-C", str(base.path), "format-patch", "--stdout", commit_range, "--"],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout:
        raise PatchError(f"git format-patch {commit_range} in {base.path}: "
                         f"{proc.stderr.strip() or 'no commits in that range'}")
    return proc.stdout


def fixed_base(ksrc: str | None) -> tuple[str, KernelTree]:
    """A KSRC and tree that cannot change while compared: a Debian (or patched) tree as it is, a git tree's
    HEAD as a snapshot in the cache (uncommitted changes are not part of it: the caller says so)."""
    tree = resolve(ksrc)
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

    A patch that does not apply stops here, naming the patch and git apply's words (file and hunk), and
    nothing is left in the cache.
    """
    key = content_key(base.identity, *(p.text for p in series))
    ksrc = f"{KSRC_PREFIX}{key}"
    dest = _tree_dir(key)
    if (dest / TREE_STAMP).exists():
        return ksrc, cached_tree(ksrc)
    print(f"applying {len(series)} patch(es) to a copy of {base.path} ...", flush=True)
    with atomic.staged_dir(dest) as tmp:
        # .tmp_PID: a file Kbuild's try-run makes and removes while another build of this tree runs
        entries = [p for p in base.path.iterdir()
                   if not p.name.startswith((IN_TREE_PREFIX, ".harness-", ".tmp_")) and p.name != ".git"]
        subprocess.run(["cp", "-al", "--", *map(str, entries), str(tmp)], check=True)
        for i, patch in enumerate(series, 1):
            _apply(tmp, patch, f"patch {i}/{len(series)}")
        applied = [{"origin": p.origin, "subject": p.subject, "sha256": hashlib.sha256(p.text.encode()).hexdigest()}
                   for p in series]
        (tmp / TREE_STAMP).write_text(json.dumps({
            "identity": f"{base.identity}+{key}", "base": base_ksrc, "base_identity": base.identity,
            "patches": applied, "changed": sorted({f for p in series for f in p.touched()})}, indent=1))
    return ksrc, cached_tree(ksrc)


def _apply(tree: Path, patch: Patch, which: str) -> None:
    for name in patch.touched():
        _unshare(tree / name)
    patch_file = tree.parent / f".{tree.name}.patch"
    patch_file.write_text(patch.text)
    # outside any repository: git apply then works as patch(1) on the directory it runs in
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    try:
        proc = subprocess.run(["git", "apply", "--whitespace=nowarn", str(patch_file)], cwd=tree, env=env,
                              capture_output=True, text=True)
    finally:
        patch_file.unlink()
    if proc.returncode != 0:
        raise PatchError(f"{which} ({patch.origin}: {patch.subject}) does not apply:\n{proc.stderr.strip()}")


def _unshare(path: Path) -> None:
    """Give a hard-linked file its own copy before it is patched: the base tree must not change."""
    if path.is_file() and not path.is_symlink() and path.stat().st_nlink > 1:
        copy = path.with_name(f".{path.name}.unshared")
        shutil.copy2(path, copy)
        os.replace(copy, path)


def _tree_dir(key: str) -> Path:
    return paths.cache_root() / "src" / "patched" / key


def cached_tree(ksrc: str) -> KernelTree:
    """The KernelTree of a `patched:<key>` KSRC made by patched_tree()."""
    dest = _tree_dir(ksrc.removeprefix(KSRC_PREFIX))
    try:
        meta = json.loads((dest / TREE_STAMP).read_text())
    except FileNotFoundError:
        raise PatchError(f"{ksrc}: no such patched tree in {dest.parent} (harness compare makes them)") from None
    base = resolve(meta["base"]) if meta["base"] else None
    return KernelTree(dest, tree_version(dest), meta["identity"], immutable=True, base=base,
                      changed=tuple(meta.get("changed", ())))


def describe(tree: KernelTree) -> list[dict[str, str]]:
    """The patches of a patched tree, as applied (origin and subject), or [] for any other tree."""
    stamp = tree.path / TREE_STAMP
    if not stamp.exists():
        return []
    return list(json.loads(stamp.read_text())["patches"])
