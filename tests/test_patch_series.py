"""Patch series as untrusted input: mboxes (b4's, git's) split into their patches, patches kept as bytes,
every path checked before anything is touched, option-like --patch values refused, and KCIDB's patchset
hash of what was applied. Each attack runs against a small fake kernel tree in tmp and proves both that
it fails and that nothing changed: not the tree, not a file outside it, not the cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.kernel import patches
from harness.kernel.source import user_tree
from harness.results import kcidb
from tests.test_compare import _git, _tree
from tests.test_kcidb import plain_run, valid

PATCHES = Path(__file__).parent / "data" / "patches"
B4_SEPARATOR = b"From git@z Thu Jan  1 00:00:00 1970\n"
LATIN1_LINE = b"int b; /* compteur \xe9crit par J\xfcrgen, en Latin-1, relu */\n"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holding a cache, a base tree (base/) and files outside it (outside/), one hard-linked twice
    so that an unshare would replace it."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "base")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.c").write_text("the outside file\n")
    os.link(outside / "victim.c", outside / "victim-link.c")
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under root, symlinks not followed: type, inode, link count, size, mtime, and the bytes."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            body = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_ino, st.st_nlink, st.st_size, st.st_mtime_ns,
                                                body)
    return out


def attack(world: Path, name: str, body: str) -> Path:
    """A git-style patch file, with the body (headers and hunks) the attack needs."""
    path = world / name
    path.write_text("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
                    f"Subject: [PATCH] {name}\n\n---\n{body}")
    return path


def refused(world: Path, *patch_files: Path, match: str) -> None:
    """Applying the series raises a PatchError matching `match`, and nothing under world changed."""
    base = user_tree(world / "base")
    before = snapshot(world)
    with pytest.raises(patches.PatchError, match=match) as e:
        patches.patched_tree(base, str(base.path), patches.read_series([str(p) for p in patch_files], base))
    assert "nothing was changed" in str(e.value)
    assert snapshot(world) == before, "a file inside or outside the tree, or the cache, changed"
    staged = world / "cache" / "src" / "patched"
    assert not staged.exists() or not any(staged.iterdir()), list(staged.iterdir())


def _modify(path: str, old: str = "the outside file", new: str = "owned") -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


# --- paths that leave the tree --------------------------------------------------------------------

def test_a_patch_naming_dot_dot_is_refused_before_the_unshare(world: Path):
    # From the staged copy (cache/src/patched/.KEY.XXXX), four levels up is world/: the outside file.
    evil = attack(world, "dotdot.patch", _modify("../../../../outside/victim.c"))
    refused(world, evil, match=r"patch 1/1 \(dotdot\.patch: dotdot\.patch\) names '\.\./\.\./\.\./\.\./outside/"
                               r"victim\.c', a path with a '\.\.' component")


def test_an_absolute_path_is_refused(world: Path):
    victim = world / "outside" / "victim.c"
    evil = attack(world, "absolute.patch", _modify(str(victim)))  # a//abs/...: -p1 leaves /abs/...
    refused(world, evil, match=f"names '{re.escape(str(victim))}', an absolute path")


def test_a_traditional_diff_with_absolute_names_is_refused(world: Path):
    victim = world / "outside" / "victim.c"
    evil = attack(world, "traditional.patch", f"--- {victim}\t2026-12-05\n+++ {victim}\t2026-12-05\n"
                                              "@@ -1 +1 @@\n-the outside file\n+owned\n")
    refused(world, evil, match="an absolute path")


def test_a_rename_out_of_the_tree_is_refused(world: Path):
    evil = attack(world, "rename.patch", "diff --git a/mm/b.c b/mm/b.c\nsimilarity index 100%\n"
                                         "rename from mm/b.c\nrename to ../../../../outside/victim.c\n")
    refused(world, evil, match=r"names '\.\./\.\./\.\./\.\./outside/victim\.c', a path with a '\.\.' component")


def test_a_copy_from_outside_the_tree_is_refused(world: Path):
    evil = attack(world, "copy.patch", "diff --git a/mm/b.c b/mm/leak.c\nsimilarity index 100%\n"
                                       f"copy from {world}/outside/victim.c\ncopy to mm/leak.c\n")
    refused(world, evil, match="an absolute path")


def test_a_path_through_a_symlink_of_the_tree_is_refused(world: Path):
    (world / "base" / "mm" / "out").symlink_to(world / "outside")  # absolute: outside from any copy too
    evil = attack(world, "symlink.patch", _modify("mm/out/victim.c"))
    refused(world, evil, match=r"names 'mm/out/victim\.c', which resolves outside the tree through the "
                               r"symlink .*mm/out -> ")


def test_a_path_through_a_symlink_an_earlier_patch_makes_is_refused(world: Path):
    link = attack(world, "0001-link.patch", "diff --git a/mm/evil b/mm/evil\nnew file mode 120000\n"
                                            "--- /dev/null\n+++ b/mm/evil\n@@ -0,0 +1 @@\n"
                                            f"+{world}/outside\n\\ No newline at end of file\n")
    write = attack(world, "0002-write.patch", _modify("mm/evil/victim.c"))
    refused(world, link, write, match=r"patch 2/2 .* names 'mm/evil/victim\.c', a path through 'mm/evil', "
                                      "a symlink an earlier patch makes")


def test_git_and_the_harness_own_names_are_refused(world: Path):
    for name, path in (("git.patch", ".git/hooks/post-checkout"), ("stamp.patch", ".harness-tree.json")):
        header = f"diff --git a/{path} b/{path}\nnew file mode 100755\n--- /dev/null\n+++ b/{path}\n"
        evil = attack(world, name, header + "@@ -0,0 +1 @@\n+#!/bin/sh\n")
        refused(world, evil, match="inside .git" if "git" in name else "the harness keeps for its own files")


def test_one_bad_patch_refuses_the_whole_series(world: Path):
    good = attack(world, "0001-good.patch", _modify("mm/b.c", "int b;", "int b_good;"))
    evil = attack(world, "0002-evil.patch", _modify("../../../../outside/victim.c"))
    refused(world, good, evil, match=r"patch 2/2 \(0002-evil\.patch")


def test_a_safe_path_with_dots_in_a_name_applies(world: Path):
    """What is refused is a '..' component, not two dots in a name."""
    ok = attack(world, "dots.patch", "diff --git a/mm/a..b.c b/mm/a..b.c\nnew file mode 100644\n--- /dev/null\n"
                                     "+++ b/mm/a..b.c\n@@ -0,0 +1 @@\n+int ab;\n")
    base = user_tree(world / "base")
    _, tree = patches.patched_tree(base, str(base.path), patches.read_series([str(ok)], base))
    assert (tree.path / "mm" / "a..b.c").read_text() == "int ab;\n"


# --- option-like values ---------------------------------------------------------------------------

def test_an_option_like_patch_value_never_reaches_git(world: Path, monkeypatch: pytest.MonkeyPatch):
    repo = world / "base"
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    victim = world / "outside" / "F..x"
    victim.write_text("must stay\n")
    monkeypatch.chdir(world / "outside")
    base = user_tree(repo)  # (git status refreshes .git/index: before the snapshot)
    before = snapshot(world)
    for spec in (f"--output={victim}", "--output=F..x", "-oF..x"):
        with pytest.raises(patches.PatchError, match=r"starts with '-', which an option does.*give it as \./"):
            patches.read_series([spec], base)
    for spec in ("HEAD..--output=F", "HEAD...HEAD", "HEAD..HEAD..HEAD", "HEAD..$(id)"):
        with pytest.raises(patches.PatchError, match=r"not a commit range A\.\.B"):
            patches.read_series([spec], base)
    assert victim.read_text() == "must stay\n"
    assert snapshot(world) == before


def test_the_compare_command_refuses_an_option_like_patch(tmp_path: Path):
    from harness.cli.main import main

    victim = tmp_path / "F..x"
    victim.write_text("must stay\n")
    assert main(["compare", f"--patch=--output={victim}"]) == 2
    assert main(["compare", "--base-patch=-x..y", "--patch", str(PATCHES / "comment-only.patch")]) == 2
    assert victim.read_text() == "must stay\n"


def test_a_file_whose_name_starts_with_a_dash_is_read_as_dot_slash(world: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(world)
    (world / "-x.patch").write_bytes((PATCHES / "format-patch-series" /
                                      "0002-mm-b-add-a-second-counter.patch").read_bytes())
    (p,) = patches.read_series(["./-x.patch"], user_tree(world / "base"))
    assert p.subject == "mm/b: add a second counter"


# --- bytes ------------------------------------------------------------------------------------------

def test_a_latin1_series_applies_byte_for_byte(world: Path):
    base = user_tree(world / "base")
    series = patches.read_series([str(PATCHES / "latin1-series.mbox")], base)
    assert [p.subject for p in series] == ["mm/b: a comment in Latin-1", "mm/b: edit the Latin-1 comment"]
    _, tree = patches.patched_tree(base, str(base.path), series)
    assert (tree.path / "mm" / "b.c").read_bytes() == LATIN1_LINE
    assert (world / "base" / "mm" / "b.c").read_bytes() == b"int b;\n"
    # each patch as recorded is the mbox's bytes, not a decoding of them
    raw = (PATCHES / "latin1-series.mbox").read_bytes()
    assert [a["sha256"] for a in patches.describe(tree)] == [hashlib.sha256(p.data).hexdigest() for p in series]
    assert raw.startswith(series[0].data) and raw.endswith(series[1].data)


# --- mboxes -----------------------------------------------------------------------------------------

def test_a_b4_mbox_is_split_into_its_patches_without_the_cover_letter():
    series = patches.split_mbox((PATCHES / "b4-series.mbox").read_bytes(), "b4-series.mbox")
    assert [(p.origin, p.subject, p.touched()) for p in series] == [
        ("b4-series.mbox#1", "mm/a: name the first counter a3_first", ["mm/a.c"]),
        ("b4-series.mbox#2", "mm/b: add a second counter", ["mm/b.c"]),
        ("b4-series.mbox#3", "mm/c: a counter of its own", ["mm/c.c"])]
    assert all(p.data.startswith(B4_SEPARATOR) for p in series)
    # b4 escaped the body's "From " lines (mboxo); mboxrd reading takes one '>' off each
    assert b"\n>From " not in series[0].data
    assert b"\nFrom the notifier's point of view" in series[0].data
    assert b"\nFrom where is a3 read?" in series[0].data


def test_a_format_patch_stdout_series_splits_into_exactly_its_files():
    series = patches.split_mbox((PATCHES / "format-patch-series.mbox").read_bytes(), "s.mbox")
    files = sorted((PATCHES / "format-patch-series").glob("*.patch"))
    assert len(series) == len(files) == 3
    assert [p.data for p in series] == [f.read_bytes() for f in files]
    # git format-patch does not escape: its ">From " line is the commit message's own
    assert b"\n>From where is a3 read?" in series[0].data


def test_mboxrd_escapes_lose_one_level():
    mbox = (b"From mboxrd@z Thu Jan  1 00:00:00 1970\nSubject: [PATCH 1/2] one\n\n>From here\n>>From there\n"
            b"---\n" + _modify("mm/b.c", "int b;", "int b1;").encode() + b"\n"
            b"From mboxrd@z Thu Jan  1 00:00:00 1970\nSubject: [PATCH 2/2] two\n\n"
            b"---\n" + _modify("mm/a.c", "int a0;", "int a0x;").encode())
    one, two = patches.split_mbox(mbox, "t.mbox")
    assert b"\nFrom here\n>From there\n" in one.data and (one.subject, two.subject) == ("one", "two")


def test_b4_and_format_patch_series_make_the_same_tree(world: Path):
    base = user_tree(world / "base")
    trees = []
    for name in ("b4-series.mbox", "format-patch-series.mbox"):
        _, tree = patches.patched_tree(base, str(base.path), patches.read_series([str(PATCHES / name)], base))
        trees.append({f: (tree.path / f).read_bytes() for f in ("mm/a.c", "mm/b.c", "mm/c.c")})
    assert trees[0] == trees[1]
    assert b"int a3_first;\n" in trees[0]["mm/a.c"] and trees[0]["mm/b.c"] == b"int b;\nint b2;\n"
    assert trees[0]["mm/c.c"] == b"int c;\n"


# --- KCIDB's patchset hash ------------------------------------------------------------------------------

def _patchset_hash_of(world: Path, mbox: Path) -> str:
    base = user_tree(world / "base")
    _, tree = patches.patched_tree(base, str(base.path), patches.read_series([str(mbox)], base))
    out = world / "results" / mbox.stem
    (out / "base").mkdir(parents=True)
    (out / "compare.json").write_text("{}")
    plain_run(out / "patched" / "suites", tree.identity, tree.path, world / "builds" / "x-1111", {"test_a": "PASS"})
    (checkout,) = valid(kcidb.document(out))["checkouts"]
    return str(checkout["patchset_hash"])


def test_the_patchset_hash_of_a_format_patch_mbox_is_sha256sum_of_its_files(world: Path):
    shell = subprocess.run(["sh", "-c", "sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64"],
                           cwd=PATCHES / "format-patch-series", capture_output=True, text=True, check=True)
    assert _patchset_hash_of(world, PATCHES / "format-patch-series.mbox") == shell.stdout.strip()


def test_the_patchset_hash_of_a_b4_mbox_is_kcidbs_over_its_patches(world: Path):
    # Split here by b4's literal separator, the cover letter dropped, the blank line b4 writes after each
    # message (the mbox's, not the message's) and mboxrd's '>' taken off: then KCIDB's "sha256 over
    # newline-terminated sha256 hashes of each patch, in order".
    chunks = [B4_SEPARATOR + c for c in (PATCHES / "b4-series.mbox").read_bytes().split(B4_SEPARATOR) if c]
    assert b"[PATCH 0/3]" in chunks[0] and all(c.endswith(b"\n\n\n") for c in chunks[1:])
    split = [re.sub(rb"(?m)^>(>*From )", rb"\1", c[:-1]) for c in chunks[1:]]
    expected = hashlib.sha256(b"".join(hashlib.sha256(c).hexdigest().encode() + b"\n" for c in split)).hexdigest()
    assert len(split) == 3
    assert _patchset_hash_of(world, PATCHES / "b4-series.mbox") == expected


def test_the_stamp_records_each_patch(world: Path):
    base = user_tree(world / "base")
    _, tree = patches.patched_tree(base, str(base.path),
                                   patches.read_series([str(PATCHES / "b4-series.mbox")], base))
    stamp = json.loads((tree.path / patches.TREE_STAMP).read_text())
    assert [p["origin"] for p in stamp["patches"]] == [f"b4-series.mbox#{n}" for n in (1, 2, 3)]
    assert stamp["changed"] == ["mm/a.c", "mm/b.c", "mm/c.c"]
