"""A patch series as bytes: read from --patch arguments, split from an mbox, its paths checked.

A series is `git format-patch` files, an mbox of several (`git format-patch --stdout`, b4's `.mbx`, a
lore thread), or a commit range A..B of a git base. Patches stay bytes from the file to `git apply`:
a Latin-1 patch applies byte for byte, and each patch's sha256 (KCIDB's patchset hash is made of
them) is that of the patch as a file of its own, `git format-patch`'s.

Nothing in a patch is trusted: every path it names is checked (check_paths) before any file is
touched, and a --patch value that looks like an option never reaches git.
"""

from __future__ import annotations

import email.header
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.kernel.build import IN_TREE_PREFIX
from harness.kernel.source import KernelTree

# An mbox's separator: "From <sender> <asctime>", git's (From <sha> Mon Sep 17 00:00:00 2001), b4's
# (From git@z Thu Jan  1 00:00:00 1970), public-inbox's (From mboxrd@z ...) or a mail client's.
_SEPARATOR = re.compile(rb"^From \S+ +[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4}[^\n]*(?:\n|$)",
                        re.MULTILINE)
# git format-patch's own date: its messages are written verbatim, never >From-escaped
_GIT_MAGIC_DATE = b" Mon Sep 17 00:00:00 2001"
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)  # mboxrd: one '>' less on reading
_SUBJECT = re.compile(rb"^Subject:[ \t]*(.*(?:\n[ \t].*)*)", re.MULTILINE | re.IGNORECASE)
_COVER = re.compile(r"\[[^\]]*\b0+/\d+\]")  # [PATCH 0/3], [PATCH v2 00/12], [RFC PATCH 0/2]
_HAS_DIFF = re.compile(rb"^diff --git |^--- [^\n]*\n\+\+\+ ", re.MULTILINE)
# A commit range: two revisions (names, hashes, ~N, ^N, @{...}), neither an option
_REVISION = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_./~^@{}+-]*")
# Top-level names patched_tree() keeps out of a copy: the harness's stamps and in-tree builds, Kbuild's scratch
HARNESS_NAMES = (".harness-", IN_TREE_PREFIX, ".tmp_")


class PatchError(UserError):
    pass


@dataclass(frozen=True)
class Patch:
    origin: str  # the file it came from, and its place in an mbox: "0001-x.patch" or "series.mbox#2"
    subject: str
    data: bytes  # the patch as a file of its own, exactly the bytes git apply gets

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def touched(self) -> list[str]:
        """The tree's files this patch names (for unsharing and the stamp), as relative paths."""
        return sorted({os.fsdecode(n) for h in _headers(self.data) for n in h.names() if n})


# --- reading -------------------------------------------------------------------------------------

def check_specs(specs: list[str], option: str = "--patch") -> None:
    """Refuse, before anything is read or run, a value that git (or any program) would take as an option."""
    for spec in specs:
        if spec.startswith("-"):
            raise PatchError(f"{option} {spec}: starts with '-', which an option does, not a patch file or a "
                             f"commit range (a file whose name starts with '-': give it as ./{spec})")


def read_series(specs: list[str], base: KernelTree, option: str = "--patch") -> list[Patch]:
    """The patches of --patch arguments, in order: files (one patch or an mbox of several) or A..B."""
    check_specs(specs, option)
    series: list[Patch] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            series += split_mbox(path.read_bytes(), path.name)
        elif ".." in spec and not path.exists():
            series += split_mbox(_format_patch(base, spec, option), spec)
        else:
            raise PatchError(f"{option} {spec}: no such file (nor a commit range A..B of a git tree)")
    if not series:
        raise PatchError("the series has no patches")
    return series


def split_mbox(data: bytes, origin: str) -> list[Patch]:
    """One patch per message of an mbox, in order, a cover letter ([PATCH 0/N], no diff) left out;
    a file with no mbox separator is one patch, its bytes as they are.

    A message's patch is what `git format-patch` writes to a file for it: its separator line, the
    message, one blank line (so `git format-patch --stdout`, or `cat` of the files, splits into exactly
    the files). Messages of a mailbox that is not git format-patch's are >From-unescaped as mboxrd says
    (b4 and public-inbox escape a body's "From " lines; git format-patch does not)."""
    starts = [m.start() for m in _SEPARATOR.finditer(data)] or [0]
    if starts[0] != 0 and data[:starts[0]].strip():
        starts.insert(0, 0)
    messages = [_unescape(data[a:b]) for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    several = len(messages) > 1
    if several:  # the blank lines between two messages are the mbox's: each keeps one, as its file would
        messages = [m.rstrip(b"\n") + b"\n\n" for m in messages]
    out: list[Patch] = []
    for i, message in enumerate(messages, 1):
        subject = _subject(message)
        if not _HAS_DIFF.search(message):
            if several and (i == 1 or _COVER.search(subject)):
                continue  # a cover letter: no diff
            where = f"message {i} ({subject or 'no subject'}) " if several else ""
            raise PatchError(f"{origin}: {where}has no diff")
        patch_origin = f"{origin}#{len(out) + 1}" if several else origin
        out.append(Patch(patch_origin, re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject) or _first_line(message),
                         message))
    return out


def _unescape(message: bytes) -> bytes:
    separator = _SEPARATOR.match(message)
    if not separator or _GIT_MAGIC_DATE in separator[0]:
        return message
    return separator[0] + _ESCAPED_FROM.sub(rb"\1", message[separator.end():])


def _subject(message: bytes) -> str:
    head = message.split(b"\n\n", 1)[0]
    m = _SUBJECT.search(head)
    if not m:
        return ""
    raw = re.sub(r"\s+", " ", m[1].decode("utf-8", errors="replace")).strip()
    try:  # RFC 2047 (=?utf-8?q?...?=), as mailers and b4 write a non-ASCII subject
        return re.sub(r"\s+", " ", str(email.header.make_header(email.header.decode_header(raw)))).strip()
    except (ValueError, LookupError, UnicodeDecodeError):
        return raw


def _first_line(message: bytes) -> str:
    lines = message.strip().splitlines()
    return lines[0][:80].decode("utf-8", errors="replace") if lines else ""


def _format_patch(base: KernelTree, commit_range: str, option: str) -> bytes:
    """`git format-patch --stdout` of A..B, each side first resolved to a commit: only hashes reach it."""
    if not (base.path / ".git").exists():
        raise PatchError(f"{option} {commit_range}: a commit range needs a git base tree, {base.path} is not one")
    sides = commit_range.split("..")
    if len(sides) != 2 or not all(_REVISION.fullmatch(s) for s in sides):
        raise PatchError(f"{option} {commit_range}: not a commit range A..B (two revisions, such as "
                         "v6.12..HEAD or HEAD~3..HEAD)")
    shas = [_rev_parse(base, side, commit_range, option) for side in sides]
    proc = subprocess.run(["git", "-C", str(base.path), "format-patch", "--stdout", "--end-of-options",
                           f"{shas[0]}..{shas[1]}", "--"], capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise PatchError(f"git format-patch {commit_range} in {base.path}: "
                         f"{proc.stderr.decode(errors='replace').strip() or 'no commits in that range'}")
    return proc.stdout


def _rev_parse(base: KernelTree, revision: str, commit_range: str, option: str) -> str:
    proc = subprocess.run(["git", "-C", str(base.path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"{revision}^{{commit}}"], capture_output=True, text=True)
    sha = proc.stdout.strip()
    if proc.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        raise PatchError(f"git format-patch {commit_range} in {base.path}: {option} names {revision!r}, "
                         "which is no commit of that tree")
    return sha


# --- paths ---------------------------------------------------------------------------------------

def check_paths(series: list[Patch], tree: Path) -> None:
    """Refuse the whole series, before anything is touched, if any patch names a path that is absolute,
    has a `..` (or `.`, or empty) component, is inside .git or the harness's own files, or resolves
    outside `tree` through a symlink: one already in the tree, or one that an earlier patch makes."""
    symlinks: set[bytes] = set()
    for i, patch in enumerate(series, 1):
        headers = _headers(patch.data)
        symlinks |= {name for h in headers if h.symlink for name in h.names()}
        for name, whole in _names_to_check(headers):
            reason = _unsafe(name, whole, tree, symlinks)
            if reason:
                raise PatchError(f"patch {i}/{len(series)} ({patch.origin}: {patch.subject}) names "
                                 f"{os.fsdecode(name)!r}, {reason}: the series is refused and nothing was changed")


@dataclass
class _FileHeader:
    """What one file's header in a patch names, as git apply reads it."""
    git: bytes | None = None  # the `diff --git` line's rest, if any
    old: bytes | None = None  # ---'s name, before -p1
    new: bytes | None = None  # +++'s
    renames: tuple[bytes, ...] = ()  # rename/copy from/to: whole paths, no -p1
    symlink: bool = False  # new file mode / new mode 120000

    def names(self) -> list[bytes]:
        """The tree paths git apply writes for this file (after -p1 where it applies)."""
        out = [_strip_p1(n) for n in (self.old, self.new) if n and n != b"/dev/null"]
        out += [n for n in _diff_git_names(self.git) if n] if self.git is not None else []
        return out + list(self.renames)


def _headers(data: bytes) -> list[_FileHeader]:
    """Every file header of a patch: a `diff --git` line with its extended lines, and every ---/+++ pair
    (which is what a traditional diff has, and what git apply takes a name from)."""
    out: list[_FileHeader] = []
    lines = data.split(b"\n")
    current: _FileHeader | None = None
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r")
        if line.startswith(b"diff --git "):
            current = _FileHeader(git=line[len(b"diff --git "):])
            out.append(current)
        elif line.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            old, new = _traditional_name(line[4:]), _traditional_name(lines[i + 1].rstrip(b"\r")[4:])
            if current is not None and current.old is None and current.new is None:
                current.old, current.new = old, new
            else:
                out.append(_FileHeader(old=old, new=new))
            current = None  # the hunks start: no more extended header lines
        elif current is not None and (m := re.match(rb"(?:rename|copy) (?:from|to) (.+)", line)):
            current.renames += (_unquote(m[1]),)
        elif current is not None and re.fullmatch(rb"(?:new file mode|new mode) 120000", line):
            current.symlink = True
        elif line.startswith((b"@@", b"GIT binary patch", b"Binary files")):
            current = None
    return out


def _traditional_name(rest: bytes) -> bytes:
    return _unquote(rest.split(b"\t", 1)[0].rstrip(b" "))


def _names_to_check(headers: list[_FileHeader]) -> list[tuple[bytes, bool]]:
    """(name, whole check?) of every name git apply could write, as it reads it: each tree path in full;
    ---/+++ names before -p1 too, for an absolute name or a '..' (-p1 would hide the leading '/'); and every
    word of a name with blanks, so that nothing slips between two readings of an ambiguous header."""
    names = [(n, True) for h in headers for n in h.names()]
    for h in headers:
        names += [(n, False) for n in (h.old, h.new) if n and n != b"/dev/null"]
        words = [w for n in (h.git, h.old, h.new) if n and b" " in n.strip() for w in n.split()]
        names += [(_strip_p1(w) if w[:2] in (b"a/", b"b/") else w, True) for w in words if w != b"/dev/null"]
    return names


def _unsafe(name: bytes, whole: bool, tree: Path, symlinks: set[bytes]) -> str | None:
    if not name:
        return "an empty path"
    if name.startswith(b"/"):
        return "an absolute path"
    parts = name.split(b"/")
    if b".." in parts:
        return "a path with a '..' component"
    if not whole:
        return None
    if any(p in (b".", b"") for p in parts):
        return "a path with a '.' or empty component"
    if any(p.lower() == b".git" for p in parts):
        return "a path inside .git"
    if parts[0].decode(errors="replace").startswith(HARNESS_NAMES):
        return "a name the harness keeps for its own files"
    for n in range(1, len(parts)):
        if b"/".join(parts[:n]) in symlinks:
            return f"a path through {os.fsdecode(b'/'.join(parts[:n]))!r}, a symlink an earlier patch makes"
    return _outside(tree, parts)


def _outside(tree: Path, parts: list[bytes]) -> str | None:
    """Whether the path, followed through the tree's symlinks, leaves the tree (and through which one)."""
    root = os.path.realpath(tree)
    for n in range(1, len(parts) + 1):
        prefix = os.path.join(tree, os.fsdecode(b"/".join(parts[:n])))
        if os.path.islink(prefix):
            target = os.path.realpath(prefix)
            if os.path.commonpath([root, target]) != root:
                return f"which resolves outside the tree through the symlink {prefix} -> {os.readlink(prefix)}"
    return None


def _diff_git_names(rest: bytes) -> list[bytes]:
    """`diff --git a/X b/Y`'s names after -p1: both when quoted or blank-free, X when a/X b/X splits evenly."""
    pair = re.fullmatch(rb'("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)', rest)
    if pair:
        return [_strip_p1(_unquote(pair[1])), _strip_p1(_unquote(pair[2]))]
    half = len(rest) // 2
    if len(rest) % 2 == 1 and rest[:2] == b"a/" and rest[half:half + 3] == b" b/" and rest[2:half] == rest[half + 3:]:
        return [rest[2:half]]
    return []


def _strip_p1(name: bytes) -> bytes:
    return name.split(b"/", 1)[1] if b"/" in name else name


_C_ESCAPES = {b"a": b"\a", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v",
              b'"': b'"', b"\\": b"\\"}


def _unquote(name: bytes) -> bytes:
    """A name as git C-quotes it ("a/caf\\303\\251.c") made bytes again; an unquoted one as it is."""
    if len(name) < 2 or not (name.startswith(b'"') and name.endswith(b'"')):
        return name
    return re.sub(rb"\\([0-7]{3}|.)", lambda m: bytes([int(m[1], 8) & 0xFF]) if len(m[1]) == 3
                  else _C_ESCAPES.get(m[1], m[1]), name[1:-1])
