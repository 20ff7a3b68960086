"""Hostile build artifacts, made with tarfile and zstd, and a world to import them into: a cache with a
sentinel directory beside it, whose every file, link and mode is compared before and after an import.

Used by tests/test_artifact_attacks.py. A bomb is several zstd frames (zstd decompresses concatenated frames
as one stream): megabytes of zeros cost a few hundred bytes each, so an artifact of kilobytes unpacks to GiB.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.kernel import artifact

KEY = "0123456789abcdef"
TREE = "src/linux-source-6.12"
BUILD = f"{TREE}/harness-build-{KEY}"
ZEROS_FRAME_MIB = 64


def manifest(**changes: Any) -> dict[str, Any]:
    """A manifest that passes the schema (what a member attack needs to get past it), with `changes`."""
    m = {"format": 1, "ksrc": "debian:6.12", "package": "linux-source-6.12", "version": "6.12.117",
         "identity": "debian:linux-source-6.12=6.12.117-1~deb12u1", "series": "6.12", "key": KEY,
         "release": "6.12.117", "notifier": "on", "fragments": [], "settings": [], "spec_digest": "f" * 16,
         "guest_programs": "programskey", "build": {"release": "6.12.117", "key": KEY, "build_s": 600.0},
         "config_values": 3, "made": "2026-12-05T21:00:00+0000", "files": 3, "unpacked_bytes": 100}
    m.update(changes)
    return m


def file(name: str, data: bytes = b"x\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def node(name: str, kind: bytes, target: str = "", size: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    """A member without data: a directory, a link (symbolic or hard) to `target`, a device, a fifo."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    info.size = size
    return info, None


def manifest_member(m: dict[str, Any] | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    return file(artifact.MANIFEST, json.dumps(manifest() if m is None else m).encode())


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], end: bool = True) -> bytes:
    """The members as tar blocks (PAX: long names and links as they are), with the archive's end or not."""
    out = io.BytesIO()
    for info, data in members:
        out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data:
            out.write(data + b"\0" * (-len(data) % 512))
    if end:
        out.write(b"\0" * 1024)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


def write(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path.write_bytes(zstd(tar_bytes(members)))
    return path


def write_bomb(path: Path, before: list[tuple[tarfile.TarInfo, bytes | None]], zeros_mib: int,
               after: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> Path:
    """`before` (whose last member is a file of `zeros_mib` MiB, its header alone), its zeros, then `after`."""
    assert zeros_mib % ZEROS_FRAME_MIB == 0
    zeros = zstd(b"\0" * (ZEROS_FRAME_MIB << 20))
    with open(path, "wb") as f:
        f.write(zstd(tar_bytes(before, end=False)))
        for _ in range(zeros_mib // ZEROS_FRAME_MIB):
            f.write(zeros)
        f.write(zstd(tar_bytes(after or [])))
    return path


def big(name: str, mib: int) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = mib << 20
    return info, None  # its data comes as frames of zeros (write_bomb)


def cve_2025_4517(prefix: str, climb: int, target: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The PATH_MAX symlink chain of CVE-2025-4517 (as published with its fix), under `prefix`.

    Directories of 247-character names 16 deep, a one-letter link to each; a link at the end of the chain of
    links that climbs back 16 levels (lexically inside, but os.path.realpath gives up past PATH_MAX); then
    `escape`, a link through it that climbs `climb` more levels to `target`, and a file written through it.
    """
    comp, steps = "d" * 247, "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = prefix
    for step in steps:
        members.append(node(f"{path}/{comp}", tarfile.DIRTYPE))
        members.append(node(f"{path}/{step}", tarfile.SYMTYPE, comp))
        path = f"{path}/{comp}"
    linkpath = "/".join(steps) + "/" + "l" * 254
    members.append(node(f"{prefix}/{linkpath}", tarfile.SYMTYPE, "../" * len(steps)))
    members.append(node(f"{prefix}/escape", tarfile.SYMTYPE, f"{linkpath}/" + "../" * climb + target))
    members.append(file(f"{prefix}/escape/owned", b"written outside\n"))
    return members


@dataclass
class World:
    """tmp/world: the cache, and beside it what an import must never touch."""

    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def sentinel(self) -> Path:
        return self.root / "sentinel"

    def populate(self) -> None:
        for rel, text in (("sentinel/a.txt", "a\n"), ("sentinel/sub/b.txt", "b\n"),
                          ("sentinel/victim/keep.txt", "keep\n"), ("notes.txt", "beside the cache\n")):
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        (self.sentinel / "link").symlink_to("a.txt")
        self.cache.mkdir()

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """Everything under the world but the cache: kind, mode, size, content or link target, mtime."""
        found: dict[str, tuple[object, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            if here == self.root:
                dirnames.remove("cache")
            for name in dirnames + filenames:
                p = here / name
                st = p.lstat()
                what: object = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
                found[str(p.relative_to(self.root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                                         st.st_size, what, st.st_mtime_ns)
        return found

    def cache_entries(self) -> set[str]:
        return set(os.listdir(self.cache))
