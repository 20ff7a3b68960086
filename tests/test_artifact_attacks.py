"""`harness kernel --import` of hostile artifacts (harness/kernel/artifact_unpack.py, artifact_manifest.py):
each attack fails with an ArtifactError that says what and where, the cache holds nothing of it afterwards, and
nothing beside the cache changed (a sentinel directory next to it is compared, file by file, before and after).

The artifacts are made here with tarfile and zstd (tests/artifact_crafting.py); a valid one comes from
`artifact.pack` of the fabricated build of tests/test_kernel_artifact.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import types
from pathlib import Path

import pytest

from harness import locks, paths
from harness.app import kernel as kernel_app
from harness.cli.main import main
from harness.kernel import artifact, artifact_unpack, source
from harness.kernel.artifact_manifest import Limits, load_limits
from harness.kernel.build import STAMP
from tests.artifact_crafting import (
    BUILD,
    KEY,
    TREE,
    World,
    big,
    cve_2025_4517,
    file,
    manifest,
    manifest_member,
    node,
    tar_bytes,
    write,
    write_bomb,
    zstd,
)
from tests.test_kernel_artifact import fabricate

UP = "../../../.."  # from the tree in the staging directory (cache/.import-*/src/linux-source-6.12) to the world
# CVE-2025-4517 was fixed in 3.9.23, 3.10.18, 3.11.13, 3.12.11 and 3.13.4
FIXED = {(3, 9): 23, (3, 10): 18, (3, 11): 13, (3, 12): 11, (3, 13): 4}
TARFILE_VULNERABLE = sys.version_info[2] < FIXED.get(sys.version_info[:2], 0)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path / "world")
    w.populate()
    monkeypatch.setenv("HARNESS_CACHE", str(w.cache))
    return w


@pytest.fixture
def packed(tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch) -> artifact.Packed:
    """A real artifact, packed from a fabricated build in another cache."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "here"))
    kernel, programs, modules = fabricate(tmp_path / "here")
    made = artifact.pack(kernel, "debian:6.12", "on", (), (), programs, modules, tmp_path / "k.tar.zst")
    monkeypatch.setenv("HARNESS_CACHE", str(world.cache))
    return made


def refused(world: World, path: Path, match: str, sha256: str | None = None,
            limits: Limits | None = None) -> str:
    before = world.snapshot()
    with pytest.raises(artifact.ArtifactError, match=match) as e:
        artifact.import_artifact(path, sha256, limits)
    assert world.snapshot() == before, "the import changed something beside the cache"
    assert world.cache_entries() <= {"locks"}, f"the import left {world.cache_entries()} in the cache"
    assert str(path) in str(e.value) or "sha256" in str(e.value), f"the message does not say which file: {e.value}"
    return str(e.value)


def limits(**changes: int) -> Limits:
    base = load_limits()
    return Limits(**{**base.__dict__, **changes})


def benign() -> list:
    return [node(TREE, tarfile.DIRTYPE), file(f"{TREE}/Makefile", b"VERSION = 6\n")]


# -- the manifest -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("package", "linux-source-6.12/../../../sentinel/victim"),  # src/<package>: removed, then replaced
    ("version", "6.12.117/../../../../notes"),  # configure/by-key/<version>-<key>.config, beside the cache
    ("key", f"{KEY}/../../../../sentinel/victim"),
    ("guest_programs", "../../sentinel/victim"),
    ("fragments", ["../../../../../../etc/passwd"]),  # read to compute the spec's digest
    ("fragments", ["/etc/passwd"]),
    ("ksrc", "/work"),  # prepared after the import: a user tree would be built
    ("settings", ["FOO=y\nBAR=y"]),
    ("identity", "debian:linux-source-6.1=6.1.1-1"),  # another package than the manifest's
    ("files", "3"),
    ("format", True),
    ("made", "yesterday; rm -rf /"),
])
def test_a_hostile_manifest_is_refused_before_anything_is_unpacked(world: World, tmp_path: Path, key: str,
                                                                   value: object):
    m = manifest(**{key: value})
    path = write(tmp_path / "a.tar.zst", [manifest_member(m), *benign()])
    message = refused(world, path, rf"artifact\.json\.{key}")
    shown = value[0] if isinstance(value, list) else value
    assert repr(shown)[:40] in message, "the message does not show the value"


def test_a_manifest_with_an_unknown_key_or_a_missing_one_is_refused(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member({**manifest(), "extra": "../x"}), *benign()])
    refused(world, path, r"unknown key\(s\) \['extra'\]")
    m = manifest()
    del m["key"]
    path = write(tmp_path / "b.tar.zst", [manifest_member(m), *benign()])
    refused(world, path, r"missing key\(s\) \['key'\]")


def test_the_manifest_must_come_first_and_be_small(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [*benign(), manifest_member()])
    refused(world, path, r"first member is 'src/linux-source-6\.12', not artifact\.json")
    padded = manifest(build={"release": "6.12.117", "tree": "x" * 4000})
    path = write(tmp_path / "b.tar.zst", [manifest_member(padded), *benign()])
    refused(world, path, r"artifact\.json has \d+ bytes, more than 1024", limits=limits(manifest_bytes=1024))


def test_every_path_from_the_manifest_is_resolved_inside_the_cache(world: World, packed: artifact.Packed):
    """A valid manifest, but the cache's src/ is a link out of it: what would be placed there is refused."""
    (world.cache / "src").symlink_to(world.sentinel / "victim")
    before = world.snapshot()
    with pytest.raises(artifact.ArtifactError, match=r"resolves to .*sentinel/victim/linux-source-6\.12, outside"):
        artifact.import_artifact(packed.path)
    assert world.snapshot() == before
    assert world.cache_entries() == {"locks", "src"}


# -- the members --------------------------------------------------------------------------------------------

def test_an_absolute_member_is_refused(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), file(str(world.sentinel / "owned"))])
    refused(world, path, "is an absolute path")


def test_a_member_with_dot_dot_is_refused(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), file(f"{TREE}/{UP}/sentinel/owned")])
    refused(world, path, "has a `..` component")


def test_a_member_outside_the_manifests_layout_is_refused(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), file("builds/6.12.117-x/evil")])
    refused(world, path, r"'builds/6\.12\.117-x/evil' is not where this artifact's manifest puts its files")


@pytest.mark.parametrize(("kind", "what"), [(tarfile.CHRTYPE, "a character device"), (tarfile.BLKTYPE,
                                            "a block device"), (tarfile.FIFOTYPE, "a fifo")])
def test_a_device_node_or_fifo_is_refused(world: World, tmp_path: Path, kind: bytes, what: str):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), node(f"{TREE}/null", kind)])
    refused(world, path, f"is {what}: an artifact holds files, directories and links only")


@pytest.mark.parametrize(("members", "match"), [
    # a link out, and a file written through it
    ([node(f"{TREE}/evil", tarfile.SYMTYPE, f"{UP}/sentinel"), file(f"{TREE}/evil/owned")],
     r"is a link to '\.\./\.\./\.\./\.\./sentinel', which leaves src/linux-source-6\.12"),
    ([node(f"{TREE}/evil", tarfile.SYMTYPE, "/tmp")], "a link's target is relative"),
    # from the build directory into the tree: the build alone is placed into a full tree of the cache
    ([node(f"{BUILD}/evil", tarfile.SYMTYPE, "../Makefile")], r"which leaves src/linux-source-6\.12/harness-build-"),
    # lexically inside, but `up` is a link to the tree: the kernel climbs four levels above it
    ([node(f"{TREE}/a/b/c/up", tarfile.SYMTYPE, "../../.."),
      node(f"{TREE}/evil", tarfile.SYMTYPE, "a/b/c/up/../../../../sentinel")],
     r"'a/b/c/up/\.\./\.\./\.\./\.\./sentinel', which climbs out of 'src/linux-source-6\.12/a/b/c/up', a link"),
    # the same through a link that does not exist yet (Kbuild makes `source` in a build directory)
    ([node(f"{BUILD}/evil", tarfile.SYMTYPE, "source/../x")], r"climbs out of .*/source', a link or nothing"),
    # a file through a link that stays inside, or over one
    ([node(f"{TREE}/inc", tarfile.SYMTYPE, "."), file(f"{TREE}/inc/x")],
     r"needs src/linux-source-6\.12/inc to be a directory"),
    ([node(f"{TREE}/x", tarfile.SYMTYPE, "Makefile"), file(f"{TREE}/x")], "twice, or over a link"),
    # hard links: only to an earlier file of the same unit
    ([node(f"{TREE}/evil", tarfile.LNKTYPE, str(Path(os.sep, "etc", "passwd")))], "is an absolute path"),
    ([node(f"{TREE}/evil", tarfile.LNKTYPE, f"{TREE}/{UP}/sentinel/a.txt")], "has a `..` component"),
    ([file("guest/programskey/munmap"), node(f"{TREE}/evil", tarfile.LNKTYPE, "guest/programskey/munmap")],
     r"is a hard link to 'guest/programskey/munmap', which is not an earlier file of src/linux-source-6\.12"),
    # the one configuration file may not be a link
    ([node(f"configure/by-key/6.12.117-{KEY}.config", tarfile.SYMTYPE, f"../../{UP}/notes.txt")], "is not where"),
])
def test_a_link_that_leaves_is_refused(world: World, tmp_path: Path, members: list, match: str):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), *members])
    refused(world, path, match)


def test_the_path_max_symlink_chain_of_cve_2025_4517(world: World, tmp_path: Path):
    members = [manifest_member(), *benign(), *cve_2025_4517(TREE, 4, "sentinel")]
    # The control: this interpreter's tarfile, `data` filter and all, lets it write beside the cache
    control = World(tmp_path / "control")
    control.populate()
    staging = control.cache / ".import-control"
    staging.mkdir()
    (tmp_path / "a.tar").write_bytes(tar_bytes(members))
    with tarfile.open(tmp_path / "a.tar") as tar, contextlib.suppress(tarfile.TarError):
        tar.extractall(staging, filter="data")
    assert (control.sentinel / "owned").exists() == TARFILE_VULNERABLE, "the crafted chain is not the CVE's"

    path = write(tmp_path / "a.tar.zst", members)
    refused(world, path, r"has a name of \d+ bytes \(at most 1024\)")  # the names alone are too long
    # Even with no bound on lengths: the chain's last link is written through the chain (a link), refused;
    # the same chain placed at its real path would pass PATH_MAX here, and a link climbing out of `a` is refused
    # (test_a_link_that_leaves_is_refused, climbs out of ... a link)
    generous = limits(name_bytes=65536, link_target_bytes=65536)
    refused(world, path, r"member 'src/linux-source-6\.12/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/l+.* needs "
            r"src/linux-source-6\.12/a to be a directory, and an earlier member made it a link", limits=generous)


# -- what an import unpacks at most -------------------------------------------------------------------------

def test_a_bomb_before_the_manifest_is_refused_at_its_header(world: World, tmp_path: Path):
    path = write_bomb(tmp_path / "a.tar.zst", [big(f"{TREE}/zeros", 1024)], 1024, [manifest_member()])
    assert path.stat().st_size < 100_000  # 1 GiB of zeros in a few KiB
    refused(world, path, r"first member is 'src/linux-source-6\.12/zeros', not artifact\.json")


def test_a_bomb_over_the_byte_cap_is_refused_before_it_is_written(world: World, tmp_path: Path):
    path = write_bomb(tmp_path / "a.tar.zst", [manifest_member(), *benign(), big(f"{TREE}/zeros", 1024)], 1024)
    assert path.stat().st_size < 100_000
    refused(world, path, r"'src/linux-source-6\.12/zeros' \(1073741824 bytes\) would take the artifact past "
            r"536870912 unpacked bytes")


def test_files_are_counted_while_they_are_unpacked(world: World, tmp_path: Path):
    """16 MiB allowed, the Makefile's 12 bytes and 4 MiB files: the fourth is refused, and the hundred after it
    are never read."""
    zeros = [file(f"{TREE}/zeros-{i}", b"\0" * (4 << 20)) for i in range(6)] + \
            [file(f"{TREE}/more-{i}") for i in range(100)]
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), *zeros])
    refused(world, path, r"'src/linux-source-6\.12/zeros-3' \(4194304 bytes\) would take the artifact past 16777216",
            limits=limits(unpacked_bytes=16 << 20))


def test_a_huge_pax_header_is_refused_before_it_is_read_whole(world: World, tmp_path: Path):
    """tarfile reads a PAX header into memory whole: 256 MiB of it would be read (and held) before any cap."""
    info, _ = file(f"{TREE}/x", b"")
    info.pax_headers = {"comment": "x" * (256 << 20)}
    path = tmp_path / "a.tar.zst"
    path.write_bytes(zstd(tar_bytes([manifest_member(), *benign()], end=False) + tar_bytes([(info, b"")])))
    assert path.stat().st_size < 100_000
    refused(world, path, r"a member's headers take more than 65536 bytes")


def test_too_many_members_are_refused(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), *(file(f"{TREE}/f{i}") for i in range(50))])
    refused(world, path, r"'src/linux-source-6\.12/f17' is one more than the limit of 20 members",
            limits=limits(files=20))
    over = manifest(files=10**6, unpacked_bytes=10**11)
    path = write(tmp_path / "b.tar.zst", [manifest_member(over), *benign()])
    refused(world, path, r"declares 1000000 files and 100000000000 bytes, over the limits")


def test_the_limits_come_from_the_command_line(world: World, tmp_path: Path):
    path = write(tmp_path / "a.tar.zst", [manifest_member(), *benign(), *(file(f"{TREE}/f{i}") for i in range(9))])
    before = world.snapshot()
    proc = _cli("kernel", "--import", str(path), "--max-files", "5", cache=world.cache, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "is one more than the limit of 5 members (--max-files)" in proc.stderr
    assert world.snapshot() == before and world.cache_entries() <= {"locks"}


# -- an import ends, and leaves nothing that trips the next ---------------------------------------------------

def _zstd_children() -> list[int]:
    pids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            name = stat_file.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and name == "zstd":
            pids.append(int(stat_file.parent.name))
    return pids


def _cli(*args: str, cache: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HARNESS_CACHE": str(cache)})


def _refused_early(tmp_path: Path, world: World) -> Path:
    """A member refused second, with 256 MiB behind it: zstd blocks on the pipe unless it is killed."""
    members = [manifest_member(), file(str(world.sentinel / "owned")), big(f"{TREE}/zeros", 256)]
    return write_bomb(tmp_path / "a.tar.zst", members, 256)


def test_a_refused_early_member_does_not_hang_the_import(world: World, tmp_path: Path):
    path = _refused_early(tmp_path, world)
    before = world.snapshot()
    proc = _cli("kernel", "--import", str(path), cache=world.cache, timeout=120)  # TimeoutExpired: it hung
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert f"harness: {path}: member" in proc.stderr and "is an absolute path" in proc.stderr
    assert world.snapshot() == before and world.cache_entries() <= {"locks"}


def test_a_refused_early_member_ends_the_decompressor(world: World, tmp_path: Path):
    path = _refused_early(tmp_path, world)
    errors: list[BaseException] = []

    def importing() -> None:
        try:
            artifact.import_artifact(path)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=importing, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the import hangs on its decompressor"
    # killed, not waited for until the decompressor's grace period ran out (a blocked zstd never exits)
    assert time.monotonic() - started < artifact_unpack.WAIT_S * 0.75
    assert len(errors) == 1 and isinstance(errors[0], artifact.ArtifactError), errors
    assert _zstd_children() == [], "the decompressor was left running"


def test_a_killed_import_leaves_nothing_that_trips_the_next(world: World, packed: artifact.Packed):
    tree = world.cache / TREE
    # The import unpacks, then waits for the tree's lock (held here): it is killed there, staging dir and all
    with locks.locked(source.tree_lock(tree), "a run reading the tree"):
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pathlib import Path; from harness.kernel import artifact; "
             "artifact.import_artifact(Path(sys.argv[1]))", str(packed.path)],
            cwd=paths.REPO, env={**os.environ, "HARNESS_CACHE": str(world.cache)}, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stderr is not None
            for line in child.stderr:  # locks.locked says so once it has waited a second
                if "waiting for tree-linux-source-6.12" in line:
                    break
            else:
                pytest.fail(f"the import ended before it waited for the tree's lock (exit {child.wait()})")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        (stale,) = world.cache.glob(".import-*")
        assert (stale / BUILD / STAMP).exists(), "the killed import had not unpacked"
        (stale / TREE / "out").symlink_to(world.sentinel)  # a cleanup that followed links would empty it
    before = world.snapshot()
    m = artifact.import_artifact(packed.path, packed.sha256)
    assert m["key"] == KEY and (tree / source.IMPORTED).exists() and (tree / f"harness-build-{KEY}" / STAMP).exists()
    assert not list(world.cache.glob(".import-*")), "a staging directory is left in the cache"
    assert world.snapshot() == before


# -- sha256 ---------------------------------------------------------------------------------------------------

def test_a_wrong_sha256_is_refused_before_unpacking(world: World, packed: artifact.Packed):
    assert packed.sha256 == hashlib.sha256(packed.path.read_bytes()).hexdigest()
    assert artifact.sha256_file(packed.path).read_text() == f"{packed.sha256}  {packed.path.name}\n"
    refused(world, packed.path, rf"sha256 {packed.sha256}, expected {'0' * 64}: not the artifact that was packed",
            sha256="0" * 64)
    refused(world, packed.path, r"--sha256 'ABC': not a sha256", sha256="ABC")
    assert artifact.import_artifact(packed.path, packed.sha256)["key"] == KEY


def test_a_wrong_sha256_on_the_command_line(world: World, packed: artifact.Packed):
    before = world.snapshot()
    proc = _cli("kernel", "--import", str(packed.path), "--sha256", "1" * 64, cache=world.cache, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"expected {'1' * 64}: not the artifact that was packed" in proc.stderr
    assert world.snapshot() == before and world.cache_entries() <= {"locks"}


def test_pack_prints_the_sha256(tmp_path: Path, packed: artifact.Packed, capfd: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch):
    build = types.SimpleNamespace(kernel_image="bz", config="c", release="r", arch=types.SimpleNamespace(name="x86_64"))
    prepared = types.SimpleNamespace(build=build, image=types.SimpleNamespace(initramfs="i"), timings={},
                                     tree=types.SimpleNamespace(identity="t"), notifier="on", fragments=())
    monkeypatch.setattr(kernel_app, "prepare", lambda *a: prepared)
    monkeypatch.setattr(kernel_app, "pack", lambda *a: packed)
    assert main(["kernel", "--pack", str(packed.path)]) == 0
    out, _ = capfd.readouterr()
    assert json.loads(out)["artifact"]["sha256"] == hashlib.sha256(packed.path.read_bytes()).hexdigest()


def test_the_import_options_go_with_import(capfd: pytest.CaptureFixture[str]):
    assert main(["kernel", "--sha256", "0" * 64]) == 2
    assert "--sha256, --max-files and --max-unpacked-mib go with --import" in capfd.readouterr().err
