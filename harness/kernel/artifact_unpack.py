"""Unpacking a build artifact that may be hostile, into a staging directory: every member is checked here.

tarfile's `data` filter is not relied on: Python 3.11.7 (this machine's) has CVE-2025-4517, where a chain of
symbolic links longer than PATH_MAX makes os.path.realpath stop resolving, so the filter passes a link that
the kernel resolves outside. This module extracts by itself instead, and never follows a link while it writes:

- the manifest (artifact.json) must be the first member; it is read (bounded) and validated before any other
  member is, and then decides where every other member may go (src/<package>/, guest/<guest_programs>/, one
  configure/by-key/<version>-<key>.config): anything else is refused;
- a name is relative, has no `..` and no control character, and its length is bounded; only regular files,
  directories, symbolic links and hard links are extracted (no devices, fifos, sparse or continued files);
- every parent directory is made here, component by component, and must be a real directory (lstat), and a
  file is opened with O_CREAT|O_EXCL|O_NOFOLLOW: nothing is written through a link or over an earlier member;
- a symbolic link's target is relative, bounded, and lexically stays inside its unit (the tree, the build
  directory, the guest programs: what moves into the cache as one). Lexical resolution equals the kernel's
  only where no `..` follows a link (a link to `..` and then `../x` climbs one more level), so once every
  member is out, each component before a target's last `..` must be a real directory in the staging tree.
  Then no link resolves outside its unit, whatever the chain, and no path length matters;
- a hard link names an earlier regular file of the same unit;
- the number of members and the bytes of regular files are capped while unpacking (a member that would pass
  a cap is refused before it is written), and so is what tarfile reads (its own headers included).

The decompressor is a child process; whatever ends the unpacking (a refused member, a cap, a corrupt
stream), it is killed and reaped, so an import never waits on a pipe nobody drains.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from harness.kernel.artifact_manifest import ArtifactError, Limits, validate

MANIFEST = "artifact.json"
IN_TREE_PREFIX = "harness-build-"  # harness/kernel/build.py's; repeated to keep this module free of the build
CHUNK = 1 << 20
TRAILER_BYTES = 1 << 20  # what may follow the archive's end (tar pads to records of 10 KiB)
HEADER_BYTES = 3 * 512  # per member, what tarfile reads besides the data: a header, a PAX header, padding
# What tarfile may read to find the next member (padding, PAX or GNU long-name headers, the header): it reads a
# PAX header whole into memory, so a header of 500 MiB would be read before the byte cap is reached.
NEXT_MEMBER_BYTES = 64 << 10
WAIT_S = 60.0
_KINDS = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo",
          tarfile.CONTTYPE: "a contiguous file", tarfile.GNUTYPE_SPARSE: "a sparse file"}


def sha256_of(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def compressor(path: Path, decompress: bool = False) -> list[str] | None:
    name = path.name
    if name.endswith((".tar.zst", ".tzst")):
        return ["zstd", "-q", "-d", "-c"] if decompress else ["zstd", "-q", "-T0", "-12", "-c"]
    if name.endswith((".tar.gz", ".tgz")):
        return ["gzip", "-d", "-c"] if decompress else ["gzip", "-6", "-n", "-c"]
    if name.endswith(".tar"):
        return None
    raise ArtifactError(f"{path}: an artifact is .tar.zst, .tar.gz or .tar")


class _Bounded:
    """The decompressed stream, as tarfile reads it: refused past `budget` bytes (its own headers count too:
    tarfile reads a PAX header whole into memory)."""

    def __init__(self, stream: IO[bytes], budget: int, where: str) -> None:
        self.stream, self.budget, self.where, self.read_bytes = stream, budget, where, 0
        self.window_end: int | None = None

    def window(self, size: int | None) -> None:
        """At most `size` bytes from here on (None: no bound but the budget)."""
        self.window_end = None if size is None else self.read_bytes + size

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if 0 <= size <= CHUNK else CHUNK)
        self.read_bytes += len(data)
        if self.read_bytes > self.budget:
            raise ArtifactError(f"{self.where}: unpacks to more than {self.budget} bytes of tar stream: refused "
                                "(the limits are configs/artifact-limits.yaml; --max-unpacked-mib, --max-files)")
        if self.window_end is not None and self.read_bytes > self.window_end:
            raise ArtifactError(f"{self.where}: a member's headers take more than {NEXT_MEMBER_BYTES} bytes: refused")
        return data

    def next_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo | None:
        self.window(NEXT_MEMBER_BYTES + tarfile.RECORDSIZE)  # tarfile reads ahead by a record
        try:
            return tar.next()
        finally:
            self.window(None)


@contextmanager
def _decompressed(artifact: Path, raw: IO[bytes]) -> Iterator[IO[bytes]]:
    """The artifact's tar stream; the decompressor is killed and reaped however the block ends."""
    command = compressor(artifact, decompress=True)
    if command is None:
        yield raw
        return
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdin=raw, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()  # a decompressor still writing gets EPIPE rather than blocking
            try:
                rc = proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            said = errors.read(2000).decode(errors="replace").strip()
            raise ArtifactError(f"{artifact}: {command[0]} failed (exit {rc}): {said or 'no message'}")


def _drain(stream: IO[bytes] | _Bounded, where: str) -> None:
    """Read what follows the archive's end to EOF, so that the decompressor finishes; bounded."""
    left = TRAILER_BYTES
    while chunk := stream.read(min(CHUNK, left + 1)):
        left -= len(chunk)
        if left < 0:
            raise ArtifactError(f"{where}: more than {TRAILER_BYTES} bytes after the archive's end")


def member_path(name: str, limits: Limits, where: str) -> PurePosixPath | None:
    """A member's name as a relative path (None: the archive's root, `.` or `./`); refused if unsafe."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ArtifactError(f"{where}: member {name!r:.200} has a name that is not UTF-8") from None
    if size > limits.name_bytes:
        raise ArtifactError(f"{where}: member {name[:80]!r}... has a name of {size} bytes (at most "
                            f"{limits.name_bytes})")
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in name):
        raise ArtifactError(f"{where}: member {name!r:.200} has a control character in its name")
    if name.startswith("/"):
        raise ArtifactError(f"{where}: member {name!r:.200} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"{where}: member {name!r:.200} has a `..` component")
    if any(len(p.encode()) > 255 for p in parts):
        raise ArtifactError(f"{where}: member {name!r:.200} has a component longer than 255 bytes")
    return PurePosixPath(*parts) if parts else None


@dataclass
class Layout:
    """Where the manifest lets members go, and the units that links must stay inside."""

    units: tuple[PurePosixPath, ...]  # most specific first: the build directory, the tree, the programs
    config: PurePosixPath  # the one regular file of configure/by-key/
    dirs: frozenset[PurePosixPath]  # the directories above them

    @classmethod
    def of(cls, m: dict[str, Any]) -> Layout:
        tree = PurePosixPath("src", m["package"])
        config = PurePosixPath("configure", "by-key", f"{m['version']}-{m['key']}.config")
        units = (tree / f"{IN_TREE_PREFIX}{m['key']}", tree, PurePosixPath("guest", m["guest_programs"]))
        dirs = {p for path in (config, *units) for p in path.parents if p != PurePosixPath(".")}
        return cls(units, config, frozenset(dirs))

    def unit(self, rel: PurePosixPath) -> PurePosixPath | None:
        return next((u for u in self.units if rel == u or u in rel.parents), None)


@dataclass
class _Extraction:
    staged: Path
    layout: Layout
    limits: Limits
    where: str
    members: int = 1  # the manifest
    unpacked: int = 0
    files: set[PurePosixPath] = field(default_factory=set)
    links: list[tuple[PurePosixPath, str]] = field(default_factory=list)
    dir_times: dict[PurePosixPath, float] = field(default_factory=dict)

    def refuse(self, member: tarfile.TarInfo, why: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: member {member.name!r:.200} {why}")

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        try:
            self._add(member, tar)
        except OSError as e:  # a name too long for this file system, say: refused like the rest
            raise self.refuse(member, f"cannot be written: {e.strerror or e}") from None

    def _add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.members += 1
        if self.members > self.limits.files:
            raise self.refuse(member, f"is one more than the limit of {self.limits.files} members (--max-files)")
        rel = member_path(member.name, self.limits, self.where)
        if rel is None:
            if not member.isdir():
                raise self.refuse(member, "names the archive's root and is not a directory")
            return
        unit = self.layout.unit(rel)
        if member.isdir() and (unit or rel in self.layout.dirs):
            self._mkdirs(member, rel)
            self.dir_times[rel] = _mtime(member)
        elif rel == self.layout.config and member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not member.sparse:
            self._file(member, rel, tar)
        elif unit is None or rel == unit:
            raise self.refuse(member, "is not where this artifact's manifest puts its files (src/PACKAGE/, "
                              "guest/PROGRAMS/, configure/by-key/VERSION-KEY.config), or not of the kind it must be")
        elif member.sparse is not None:  # GNU sparse through PAX records: a regular file's type, holes to fill
            raise self.refuse(member, "is a sparse file: an artifact holds files, directories and links only")
        elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            self._file(member, rel, tar)
        elif member.issym():
            self._symlink(member, rel, unit)
        elif member.islnk():
            self._hardlink(member, rel, unit)
        else:
            kind = _KINDS.get(member.type, f"of tar type {member.type!r}")
            raise self.refuse(member, f"is {kind}: an artifact holds files, directories and links only")

    def _mkdirs(self, member: tarfile.TarInfo, rel: PurePosixPath) -> None:
        """Make rel and its parents, each a real directory: never through a link, never over a file."""
        path = self.staged
        for part in rel.parts:
            path = path / part
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise self.refuse(member, f"needs {path.relative_to(self.staged)} to be a directory, and an "
                                      "earlier member made it a link or a file") from None

    def _file(self, member: tarfile.TarInfo, rel: PurePosixPath, tar: tarfile.TarFile) -> None:
        if member.size < 0:  # tar's base-256 numbers can be negative
            raise self.refuse(member, f"has a size of {member.size} bytes")
        if self.unpacked + member.size > self.limits.unpacked_bytes:
            raise self.refuse(member, f"({member.size} bytes) would take the artifact past {self.limits.unpacked_bytes}"
                              " unpacked bytes (--max-unpacked-mib)")
        self.unpacked += member.size
        self._mkdirs(member, rel.parent)
        source = tar.extractfile(member)
        assert source is not None  # a regular file's
        mode = 0o755 if member.mode & 0o100 else 0o644  # as the data filter has it: no set-id, no write for others
        try:
            fd = os.open(self.staged / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise self.refuse(member, "is in the archive twice, or over a link") from None
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
            os.utime(out.fileno(), (_mtime(member),) * 2)  # Kbuild decides by mtimes what to rebuild
        self.files.add(rel)

    def _symlink(self, member: tarfile.TarInfo, rel: PurePosixPath, unit: PurePosixPath) -> None:
        target = member.linkname
        if not target or target.startswith("/") or "\0" in target or len(target.encode(errors="replace")) > \
                self.limits.link_target_bytes:
            raise self.refuse(member, f"is a link to {target[:200]!r}: a link's target is relative, at most "
                              f"{self.limits.link_target_bytes} bytes")
        resolved = posixpath.normpath(posixpath.join(str(rel.parent), target))
        if not PurePosixPath(resolved).is_relative_to(unit):
            raise self.refuse(member, f"is a link to {target[:200]!r}, which leaves {unit}")
        self._mkdirs(member, rel.parent)
        try:
            os.symlink(target, self.staged / rel)
        except FileExistsError:
            raise self.refuse(member, "is in the archive twice") from None
        self.links.append((rel, target))

    def _hardlink(self, member: tarfile.TarInfo, rel: PurePosixPath, unit: PurePosixPath) -> None:
        target = member_path(member.linkname, self.limits, self.where)
        if target is None or target not in self.files or self.layout.unit(target) != unit:
            raise self.refuse(member, f"is a hard link to {member.linkname[:200]!r}, which is not an earlier file "
                              f"of {unit}")
        self._mkdirs(member, rel.parent)
        try:
            os.link(self.staged / target, self.staged / rel, follow_symlinks=False)
        except FileExistsError:
            raise self.refuse(member, "is in the archive twice") from None

    def finish(self) -> None:
        for rel, target in self.links:
            self._check_walk(rel, target)
        for rel in sorted(self.dir_times, key=lambda p: len(p.parts), reverse=True):
            os.utime(self.staged / rel, (self.dir_times[rel], self.dir_times[rel]), follow_symlinks=False)

    def _check_walk(self, rel: PurePosixPath, target: str) -> None:
        """Every component before the target's last `..` is a real directory: there lexical is the kernel's."""
        parts = [p for p in target.split("/") if p not in ("", ".")]
        last_up = max((i for i, p in enumerate(parts) if p == ".."), default=-1)
        here = rel.parent
        for part in parts[:last_up + 1]:
            here = here.parent if part == ".." else here / part
            try:
                real_dir = stat.S_ISDIR(os.lstat(self.staged / here).st_mode)
            except OSError:  # not there, or a path too long to be one
                real_dir = False
            if not real_dir:
                raise ArtifactError(f"{self.where}: member {str(rel)!r:.200} is a link to {target[:200]!r}, which "
                                    f"climbs out of {str(here)!r:.200}, a link or nothing: refused (it could "
                                    "resolve outside the artifact)")


def _mtime(member: tarfile.TarInfo) -> float:
    """The member's time, within what utime takes (tar's numbers can be anything)."""
    return min(max(float(member.mtime), 0.0), float(2**34))


def _manifest(tar: tarfile.TarFile, limits: Limits, where: str) -> dict[str, Any]:
    first = tar.next()
    if first is None or member_path(first.name, limits, where) != PurePosixPath(MANIFEST) or not first.isfile():
        raise ArtifactError(f"{where}: its first member is {first.name if first else 'missing'!r}, not {MANIFEST}: "
                            "not made by `harness kernel --pack` (which writes the manifest first)")
    if first.size > limits.manifest_bytes:
        raise ArtifactError(f"{where}: {MANIFEST} has {first.size} bytes, more than {limits.manifest_bytes}")
    data = tar.extractfile(first)
    assert data is not None
    try:
        manifest = json.loads(data.read())
    except ValueError as e:
        raise ArtifactError(f"{where}: {MANIFEST} is not JSON: {e}") from None
    m = validate(manifest, f"{where}: {MANIFEST}")
    if m["files"] + 1 > limits.files or m["unpacked_bytes"] > limits.unpacked_bytes:
        raise ArtifactError(f"{where}: {MANIFEST} declares {m['files']} files and {m['unpacked_bytes']} bytes, over "
                            f"the limits ({limits.files} members, {limits.unpacked_bytes} bytes; --max-files, "
                            "--max-unpacked-mib)")
    return m


def unpack(artifact: Path, staged: Path, limits: Limits, sha256: str | None = None) -> dict[str, Any]:
    """Unpack `artifact` into the empty directory `staged`; its validated manifest.

    With `sha256`, the file is checked against it first, through the same open file that is then unpacked.
    """
    where = str(artifact)
    with open(artifact, "rb") as raw:
        if sha256 is not None:
            if (found := sha256_of(raw)) != sha256:
                raise ArtifactError(f"{artifact}: sha256 {found}, expected {sha256}: not the artifact that was "
                                    "packed (corrupt, or replaced): refused")
            raw.seek(0)
        budget = limits.unpacked_bytes + (limits.files + 1) * HEADER_BYTES + limits.manifest_bytes + TRAILER_BYTES
        with _decompressed(artifact, raw) as stream:
            bounded = _Bounded(stream, budget, where)
            try:
                bounded.window(NEXT_MEMBER_BYTES + tarfile.RECORDSIZE)  # opening reads the first member
                with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
                    bounded.window(None)
                    m = _manifest(tar, limits, where)
                    extraction = _Extraction(staged, Layout.of(m), limits, where)
                    # next(), not iteration: iterating starts over at the members already read (the manifest)
                    while (member := bounded.next_member(tar)) is not None:
                        extraction.add(member, tar)
                _drain(bounded, where)
            except (tarfile.TarError, EOFError) as e:
                raise ArtifactError(f"{artifact} is not a build artifact: {e}") from None
    extraction.finish()
    return m
