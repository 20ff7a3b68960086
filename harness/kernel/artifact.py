"""A kernel build as one file: packed where it was built, imported into another cache, run there with no compiler.

    harness kernel [--kernel-src ... --notifier ... --fragment ...] --pack OUT.tar.zst
    harness kernel --import ARTIFACT.tar.zst

What a cell needs from a build, and nothing of its object tree (a CI build job uploads it, its cell jobs
download it): the bzImage and System.map; the modules staging tree; what out-of-tree modules (the probe,
`make -C <build> M=...`) and kprograms need to build against it, chosen as the kernel's own
scripts/package/install-extmod-build chooses it (Module.symvers, .config, include/generated,
arch/x86/include/generated, the host programs of scripts/, objtool) plus the source tree's Makefiles,
headers and scripts, the selftests' sources and the uapi headers; the image's inputs made for it (guest
programs and modules, the kprobe layout); and the build's metadata (its stamp, build.log, the config's why).

The archive holds paths relative to a cache root, as a cache lays them out: src/linux-source-X.Y/ (the
pruned tree) with the build in its harness-build-KEY/ (as harness/kernel/build.py:build_dir places it, so
Kbuild spells the source tree `..`), configure/by-key/, guest/, and artifact.json at the top. No kernel C
file is in it: an imported tree cannot compile a kernel, only modules and programs against one.

Only builds of trees the harness owns (Debian's) are packed: a user's tree is not a name another machine
can resolve.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness import atomic, locks, paths
from harness.kernel import config, source
from harness.kernel.arch import HOST
from harness.kernel.artifact_manifest import FORMAT, FRAGMENTS, ArtifactError, Limits, load_limits, validate
from harness.kernel.artifact_unpack import MANIFEST, compressor, sha256_of, unpack
from harness.kernel.build import IN_TREE_PREFIX, STAMP, KernelBuild, build_dir, content_key
from harness.kernel.config import ConfigSpec, config_spec, spec_key
from harness.kernel.kconfig import tree_version

__all__ = ["FORMAT", "MANIFEST", "ArtifactError", "Limits", "Packed", "import_artifact", "pack"]
SHA256 = re.compile(r"[0-9a-f]{64}")
STAGING_PREFIX = ".import-"  # an import's staging directory, in the cache
OBJTREE, SRCTREE = "@HARNESS_OBJTREE@", "@HARNESS_SRCTREE@"  # in an artifact's build Makefile (portable_makefile)
IMPORTED = source.IMPORTED
# Host programs and helpers of scripts/ that a module build never runs (install-extmod-build's find_in_scripts).
_SCRIPTS_PRUNE = {"atomic", "dtc", "kconfig", "package"}
_SCRIPTS_SKIP = {"unifdef", "mk_elfconfig"}
# What the harness reads or builds from the source tree besides Kbuild's own files (harness/kernel/userprogs.py).
_TREE_EXTRA = ("lib/test_hmm_uapi.h", "mm/gup_test.h", "tools/include", "tools/testing/selftests/mm",
               "tools/testing/selftests/vm", "tools/testing/selftests/kselftest.h",
               "tools/testing/selftests/kselftest_harness.h", "tools/testing/selftests/lib.mk",
               "tools/testing/selftests/Makefile")
# The harness's own products in a build directory: the modules staging tree, guest modules, kprobe layout,
# static programs, uapi headers' stamp, the why file and the stamp that says the build finished.
# (Guest modules are added by name: their directory keeps every version ever built. Static programs built
# against the tree are not shipped: a cell's gcc makes those it runs, from the headers shipped.)
_BUILD_HARNESS = ("harness-config-why.txt", "harness-modules", "harness-kprobe", ".harness-headers.json", STAMP,
                  "build.log")


@dataclass(frozen=True)
class Packed:
    path: Path
    bytes: int  # the compressed file
    unpacked_bytes: int
    files: int
    manifest: dict[str, Any]
    sha256: str  # of the file at `path`: `--import --sha256` checks it


def spec_digest(identity: str, spec: ConfigSpec) -> str:
    """What decides the final .config, as spec_key() has it, less the tree's path (which differs per cache)."""
    base = Path(spec.base)
    return content_key(identity, spec.base, base.read_bytes() if base.is_file() else b"",
                       *(f.read_bytes() for f in spec.fragments), *spec.settings, "off", *spec.off, "on", *spec.on,
                       *(code.read_bytes() for code in config.ENGINE))


def _package(tree: source.KernelTree) -> str:
    if not tree.identity.startswith("debian:") or tree.base is not None:
        raise ArtifactError(f"only builds of Debian's trees can be packed (debian:X.Y); {tree.path} is "
                            f"{tree.identity}: another machine cannot resolve it")
    return tree.identity.removeprefix("debian:").split("=", 1)[0]


def fragment_name(fragment: str) -> str:
    """An extra fragment as an artifact names it: configs/fragments/NAME (a path there is spelled as its NAME);
    a fragment anywhere else is a file of this machine, which the importing one cannot read."""
    frags = FRAGMENTS.resolve()
    path = config.fragment_path(fragment).resolve()
    if not path.is_relative_to(frags) or path.suffix != ".config":
        raise ArtifactError(f"fragment {fragment} is not under {FRAGMENTS}: an artifact names its fragments by "
                            "configs/fragments/NAME, which the checkout that imports it reads")
    return str(path.relative_to(frags).with_suffix(""))


def _walk(root: Path, rel: str) -> Iterator[str]:
    """`rel` (a file, a link, or a directory and everything under it) relative to root, if it exists."""
    top = root / rel
    if top.is_symlink() or top.is_file():
        yield rel
    elif top.is_dir():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                yield str((Path(dirpath) / name).relative_to(root))


def _scripts(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root / "scripts"):
        dirnames[:] = sorted(d for d in dirnames if d not in _SCRIPTS_PRUNE)
        for name in sorted(filenames):
            if name not in _SCRIPTS_SKIP and not name.endswith((".o", ".cmd")):
                yield str((Path(dirpath) / name).relative_to(root))


def tree_files(tree: Path, arch: str = "x86") -> list[str]:
    """The source tree's part: install-extmod-build's first list, plus what the harness's programs read."""
    # Kconfig and arch's Kconfig only so that the tree is recognised as one (kconfig.check_tree)
    files = ["Makefile", "Kconfig", f"arch/{arch}/Kconfig", source.STAMP]
    files += sorted(str(p.relative_to(tree)) for p in (tree / "arch" / arch).glob("Makefile*"))
    for dirpath, dirnames, _ in os.walk(tree / "arch" / arch):
        dirnames[:] = sorted(d for d in dirnames if d != "generated" and not d.startswith(IN_TREE_PREFIX))
        for d in list(dirnames):
            if d == "include":
                files += _walk(tree, str((Path(dirpath) / d).relative_to(tree)))
                dirnames.remove(d)
    files += sorted(str(p.relative_to(tree)) for name in ("Kbuild.platforms", "Platform")
                    for p in (tree / "arch" / arch).rglob(name))
    for dirpath, dirnames, filenames in os.walk(tree / "include"):
        dirnames[:] = sorted(d for d in dirnames if d not in ("config", "generated"))
        files += [str((Path(dirpath) / n).relative_to(tree)) for n in sorted(filenames)]
    files += _scripts(tree)
    for rel in _TREE_EXTRA:
        files += _walk(tree, rel)
    return list(dict.fromkeys(f for f in files if (tree / f).exists() or (tree / f).is_symlink()))


def build_files(build: Path, values: dict[str, str], arch: str = "x86",
                image: str = "arch/x86/boot/bzImage") -> list[str]:
    """The build directory's part: install-extmod-build's second list, the boot files, the harness's products."""
    files = [".config", "Module.symvers", "System.map", image, "include/config/auto.conf",
             "include/config/kernel.release"]
    if values.get("OBJTOOL") == "y":
        files.append("tools/objtool/objtool")
    if values.get("DEBUG_INFO_BTF_MODULES") == "y":
        files.append("tools/bpf/resolve_btfids/resolve_btfids")
    for rel in (f"arch/{arch}/include/generated", "include/generated", "usr/include", *_BUILD_HARNESS):
        files += _walk(build, rel)
    files += _scripts(build)
    if values.get("GCC_PLUGINS") == "y":
        files += sorted(str(p.relative_to(build)) for p in (build / "scripts/gcc-plugins").glob("*.so"))
    # The staging tree's build/ and source/ links name this cache's directories: meaningless elsewhere.
    staged_links = {"build", "source"}
    files = [f for f in files if not (f.startswith("harness-modules/") and Path(f).name in staged_links)]
    files = [f for f in files if not f.endswith((".o", ".cmd"))]
    missing = [f for f in (".config", "Module.symvers", image, STAMP) if f not in files
               or not (build / f).exists()]
    if missing:
        raise ArtifactError(f"{build} is not a finished build: no {', '.join(missing)}")
    return list(dict.fromkeys(files))


def pack(build: KernelBuild, ksrc: str, notifier: str, fragments: tuple[str, ...], settings: tuple[str, ...],
         guest_programs: Path, guest_modules: Sequence[Path], out: Path) -> Packed:
    """Write the artifact of a finished build (of a Debian tree) to `out`; `guest_programs` is the image's
    programs directory, `guest_modules` the image's modules (.ko files under the build directory)."""
    tree = build.tree
    package = _package(tree)
    fragments = tuple(fragment_name(f) for f in fragments)
    values = build.config_values()
    stamp = json.loads((build.dir / STAMP).read_text())
    spec = config_spec(notifier, tree.series, settings, fragments, build.arch.name)
    kept = paths.cache_root() / "configure" / "by-key" / f"{tree.version}-{build.key}.config"
    if not kept.exists():
        raise ArtifactError(f"{kept} is missing: pack a build right after `harness kernel` made or found it")
    src = f"src/{package}"
    bdir = f"{src}/{IN_TREE_PREFIX}{build.key}"
    members: list[tuple[str, Path]] = [(f"{src}/{f}", tree.path / f) for f in tree_files(tree.path, build.arch.srcarch)]
    members += [(f"{bdir}/{f}", build.dir / f)
                for f in build_files(build.dir, values, build.arch.srcarch, build.arch.image_path)]
    for module_dir in sorted({ko.parent.resolve() for ko in guest_modules}):
        rel = module_dir.relative_to(build.dir.resolve())  # spelled through builds/ or the tree: the same
        members += [(f"{bdir}/{f}", build.dir / f) for f in _walk(build.dir, str(rel))]
    members.append((f"configure/by-key/{kept.name}", kept))
    members += [(f"guest/{guest_programs.name}/{f}", guest_programs / f) for f in sorted(os.listdir(guest_programs))]
    members = list(dict(members).items())  # each name once: an import refuses a member it has already written
    manifest = {
        "format": FORMAT, "ksrc": ksrc, "package": package, "version": tree.version, "identity": tree.identity,
        "series": tree.series, "key": build.key, "release": build.release, "notifier": notifier,
        "fragments": list(fragments), "settings": list(settings), "spec_digest": spec_digest(tree.identity, spec),
        "guest_programs": guest_programs.name, "build": stamp, "config_values": len(values),
        "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": len(members), "arch": build.arch.name,
        "unpacked_bytes": sum((p.lstat().st_size for _, p in members), 0),
    }
    validate(manifest, f"the manifest of {out}")  # never write what an import would refuse
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        _write(tmp, compressor(out), manifest, members, f"{bdir}/Makefile", portable_makefile(build.dir, tree.path))
        with open(tmp, "rb") as f:
            digest = sha256_of(f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    checksum = sha256_file(out)
    checksum.unlink(missing_ok=True)  # never beside another artifact than its own
    os.replace(tmp, out)
    atomic.write_text(checksum, f"{digest}  {out.name}\n")
    return Packed(out, out.stat().st_size, manifest["unpacked_bytes"], len(members), manifest, digest)


def sha256_file(artifact: Path) -> Path:
    """Where --pack writes the artifact's sha256, as `sha256sum` does (a CI build job hands it to its cells)."""
    return artifact.with_name(f"{artifact.name}.sha256")


def _write(tmp: Path, compress: list[str] | None, manifest: dict[str, Any], members: list[tuple[str, Path]],
           makefile: str, makefile_text: str) -> None:
    """The tar stream: the manifest first (an import checks it before it unpacks anything else), then the files."""
    with open(tmp, "wb") as raw:
        proc = subprocess.Popen(compress, stdin=subprocess.PIPE, stdout=raw) if compress else None
        sink: IO[bytes] = proc.stdin if proc and proc.stdin else raw
        try:
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                for name, path in members:
                    if name != makefile:
                        tar.add(path, arcname=name, recursive=False, filter=_owned_by_root)
                _add_bytes(tar, makefile, makefile_text.encode())
        finally:
            if proc and proc.stdin:
                proc.stdin.close()
        if proc and proc.wait() != 0:
            raise ArtifactError(f"{compress and compress[0]} failed writing {tmp}")


def portable_makefile(build: Path, tree: Path) -> str:
    """The build directory's Makefile (Kbuild's outputmakefile) with its absolute paths as placeholders.

    6.12 writes `include ../Makefile` for a build inside the tree, but names the tree by its absolute path for
    one beside it (the layout before in-tree builds), and 7.x always does, with `export KBUILD_OUTPUT = <build>`.
    import_artifact() writes them back for the cache the build lands in.
    """
    text = (build / "Makefile").read_text()
    for path, mark in ((build.resolve(), OBJTREE), (build, OBJTREE), (tree.resolve(), SRCTREE), (tree, SRCTREE)):
        text = text.replace(str(path), mark)
    return text


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def import_artifact(artifact: Path, sha256: str | None = None, limits: Limits | None = None) -> dict[str, Any]:
    """Unpack an artifact into this cache, so that `prepare()` of its kernel finds a finished build.

    The tree goes to src/<package>/ when the cache has none (marked imported: source.debian_tree then uses
    it as it is and never installs the package over it); into a full tree of the same version, only the
    build is added. The config stage's memory is written for this cache, after checking that this
    checkout's fragments and config engine are the ones the build was made with.

    The artifact is untrusted (harness/kernel/artifact_unpack.py checks every member and the manifest); it is
    unpacked into a staging directory of the cache (.import-*), which goes whatever happens. Imports into one
    cache take turns (the import lock), so a staging directory found there belongs to a dead import: removed.
    """
    if sha256 is not None and not SHA256.fullmatch(sha256):
        raise ArtifactError(f"--sha256 {sha256!r:.80}: not a sha256 (64 lowercase hex digits)")
    if not artifact.is_file():
        raise ArtifactError(f"{artifact}: no such file")
    limits = limits or load_limits()
    root = paths.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with locks.locked(root / "locks" / "artifact-import.lock", f"importing {artifact.name}"):
        for stale in root.glob(f"{STAGING_PREFIX}*"):  # of dead imports (this one's would be named anew)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)  # never follows a link out (rmtree works on descriptors)
            else:
                stale.unlink(missing_ok=True)
        staged = Path(tempfile.mkdtemp(dir=root, prefix=STAGING_PREFIX))
        try:
            manifest = unpack(artifact, staged, limits, sha256)
            target = Placement.of(root, staged, manifest)
            # Into the tree's directory: its lock, exclusive (no run reads it meanwhile; source.py, prepare.py)
            with locks.locked(source.tree_lock(target.tree), f"importing {artifact.name} into {target.tree}"):
                _place(target, manifest)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return manifest


def inside(folder: Path, *parts: str) -> Path:
    """folder/parts..., resolved (links followed), which must still be inside `folder`; else an ArtifactError."""
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ArtifactError(f"{path} (from the artifact's manifest) resolves to {path.resolve()}, outside "
                            f"{folder}: refused")
    return path


@dataclass(frozen=True)
class Placement:
    """Every path of the cache and of the staging directory that an import reads or writes, each checked to be
    inside its folder before anything is changed."""

    tree: Path  # src/<package>
    build: Path  # its harness-build-<key>
    kept: Path  # configure/by-key/<version>-<key>.config
    programs: Path  # guest/<guest_programs>
    new_tree: Path  # the same in the staging directory
    new_kept: Path
    new_programs: Path

    @classmethod
    def of(cls, root: Path, staged: Path, m: dict[str, Any]) -> Placement:
        tree, kept = ("src", m["package"]), ("configure", "by-key", f"{m['version']}-{m['key']}.config")
        build, programs = (*tree, f"{IN_TREE_PREFIX}{m['key']}"), ("guest", m["guest_programs"])
        return cls(inside(root, *tree), inside(root, *build), inside(root, *kept), inside(root, *programs),
                   inside(staged, *tree), inside(staged, *kept), inside(staged, *programs))


def _regular(path: Path, what: str) -> Path:
    if not path.is_file() or path.is_symlink():
        raise ArtifactError(f"the artifact has no {what} ({path.name}) as a regular file")
    return path


def _check_staged(t: Placement, m: dict[str, Any]) -> None:
    """What _place reads from the staging directory is there, of its kind, and agrees with the manifest."""
    new_build = t.new_tree / t.build.name
    for folder, what in ((t.new_tree, "source tree"), (new_build, "build directory"), (t.new_programs, "programs")):
        if not folder.is_dir() or folder.is_symlink():
            raise ArtifactError(f"the artifact has no {what} ({folder.relative_to(folder.parents[1])}/)")
    for path, what in ((t.new_tree / source.STAMP, "package version"), (new_build / "Makefile", "build's Makefile"),
                       (new_build / STAMP, "build's stamp"), (new_build / "harness-config-why.txt", "config's why"),
                       (t.new_kept, "final .config")):
        _regular(path, what)
    if os.path.lexists(t.new_tree / IMPORTED):
        raise ArtifactError(f"the artifact ships {IMPORTED}, which only an import writes")
    if (found := f"debian:{m['package']}={(t.new_tree / source.STAMP).read_text()}") != m["identity"]:
        raise ArtifactError(f"the artifact's tree is {found}, its manifest says {m['identity']}")
    if (version := tree_version(t.new_tree)) != m["version"]:
        raise ArtifactError(f"the artifact's tree is version {version}, its manifest says {m['version']}")


def _place(t: Placement, m: dict[str, Any]) -> None:
    root = paths.cache_root()
    key, version = m["key"], m["version"]
    spec = config_spec(m["notifier"], m["series"], tuple(m["settings"]), tuple(m["fragments"]), m.get("arch", HOST))
    if (digest := spec_digest(m["identity"], spec)) != m["spec_digest"]:
        raise ArtifactError(f"the artifact's kernel ({m['ksrc']}, notifier {m['notifier']}, fragments "
                            f"{m['fragments'] or 'none'}) was configured by other fragments or another config engine "
                            f"than this checkout's (digest {m['spec_digest']}, here {digest}): import it in the "
                            "checkout that packed it, or build this kernel")
    _check_staged(t, m)
    dest = t.tree
    makefile = t.new_tree / t.build.name / "Makefile"
    where = dest.resolve()  # Kbuild wants absolute paths, whatever HARNESS_CACHE says
    makefile.write_text(makefile.read_text().replace(OBJTREE, str(where / makefile.parent.name))
                        .replace(SRCTREE, str(where)))
    stamp = dest / source.STAMP
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        if dest.exists():  # an unpacking that never finished
            shutil.rmtree(dest)
        atomic.write_text(t.new_tree / IMPORTED, json.dumps({"from": m["identity"], "key": key, "made": m["made"]}))
        os.replace(t.new_tree, dest)
    else:
        identity = f"debian:{m['package']}={stamp.read_text()}"
        if identity != m["identity"]:
            raise ArtifactError(f"{dest} holds {identity}, the artifact {m['identity']}: remove {dest} to import it")
        if not (t.build / STAMP).exists():
            shutil.rmtree(t.build, ignore_errors=True)
            os.replace(t.new_tree / t.build.name, t.build)
    tree = source.KernelTree(dest, version, m["identity"], immutable=True, imported=(dest / IMPORTED).exists())
    build_dir(tree, key)  # builds/VERSION-KEY -> the tree's harness-build-KEY
    atomic.write_text(t.kept, t.new_kept.read_text())
    why = _regular(t.build / "harness-config-why.txt", "config's why").read_text()
    memo = inside(root, "configure", "by-spec", f"{spec_key(tree, spec)}.json")
    atomic.write_text(memo, json.dumps({"key": key, "why": why}))
    if not t.programs.exists():
        t.programs.parent.mkdir(parents=True, exist_ok=True)
        os.replace(t.new_programs, t.programs)
