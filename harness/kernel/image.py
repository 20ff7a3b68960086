"""The guest's root filesystem: an initramfs of busybox, dropbear, the guest programs and modules.

The SSH host key is generated with the image and its public half kept beside it: the host side
pins it and refuses any other. The client key is the harness's own, made once in the cache.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, paths, schema
from harness.kernel import debian
from harness.kernel.arch import Arch
from harness.kernel.build import (
    BuildError,
    KernelBuild,
    ToolMissing,
    content_key,
    install_modules,
    modules_fingerprint,
    run_logged,
)
from harness.kernel.guest_modules import image_modules

BUSYBOX = Path("/bin/busybox")
BARE_INIT = paths.IMAGES / "bare-init.c"  # the bare-boot reference's /init (harness/vm/bench.py)
BARE_CFLAGS = ("-static", "-nostdlib", "-Os", "-fno-stack-protector", "-no-pie")
DROPBEAR = Path("/usr/sbin/dropbear")
# What /init mounts after devtmpfs (on /dev, with /dev/pts and /dev/shm made in it) and before tracefs
# (which a kernel may lack): file system, mount point, type.
FSTAB = "".join(f"{fs} {where} {kind} defaults 0 0\n" for fs, where, kind in (
    ("sysfs", "/sys", "sysfs"), ("devpts", "/dev/pts", "devpts"), ("tmpfs", "/dev/shm", "tmpfs"),
    ("tmpfs", "/tmp", "tmpfs"), ("tmpfs", "/run", "tmpfs"), ("debugfs", "/sys/kernel/debug", "debugfs")))
USERSPACE = paths.CONFIGS / "guest-userspace.yaml"  # host tools the guest gets, with their libraries


@dataclass(frozen=True)
class Image:
    initramfs: Path
    host_key_pub: Path  # "ssh-ed25519 AAAA..." of the guest's dropbear
    dir: Path


def client_key() -> Path:
    """The harness's own SSH key (private half); made once per cache."""
    key = paths.cache_root() / "keys" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(".tmp_id_ed25519")
        for p in (tmp, tmp.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mmu-notifier-harness", "-f", str(tmp)],
                       check=True)
        os.replace(tmp.with_name(tmp.name + ".pub"), key.with_name("id_ed25519.pub"))
        os.replace(tmp, key)
    return key


def build_guest_programs(arch: Arch) -> Path:
    """guest/programs/*.c, static, for `arch` (its cross compiler); cached by their sources."""
    sources = sorted((paths.GUEST / "programs").iterdir())
    key = content_key(*(p.name.encode() + p.read_bytes() for p in sources), (paths.GUEST / "Makefile").read_bytes(),
                      *([arch.gcc] if arch.foreign else []))
    out = paths.cache_root() / "guest" / key
    if out.exists():
        return out
    arch.require_compiler()
    (paths.cache_root() / "guest").mkdir(parents=True, exist_ok=True)
    log = paths.cache_root() / "guest" / "build.log"
    with atomic.staged_dir(out) as tmp:
        run_logged(["make", "-C", str(paths.GUEST), f"O={tmp}", f"CC={arch.gcc}"], log, f"{arch.name} guest programs")
    return out


def build_rdma_programs(arch: Arch) -> Path:
    """guest/rdma/*.c, linked against libibverbs (the host's, or `arch`'s unpacked packages: configs/arches/,
    `link_packages`); the image carries the libraries. Cached by their sources."""
    sysroot = debian.cross_libraries(arch)
    if not ((sysroot or Path("/")) / "usr/include/infiniband/verbs.h").exists():
        raise ToolMissing("infiniband/verbs.h is missing: apt-get install libibverbs-dev" if sysroot is None else
                          f"infiniband/verbs.h is missing from {sysroot}: configs/arches/{arch.name}.yaml's "
                          "link_packages must list libibverbs-dev")
    cc = [arch.gcc]
    if sysroot is not None:  # libibverbs.so, and the libraries it needs found at link time (rpath-link)
        cc += [f"-I{sysroot}/usr/include", f"-L{sysroot}/usr/lib/{arch.triplet}",
               *(f"-Wl,-rpath-link,{sysroot}/{d}/{arch.triplet}" for d in ("usr/lib", "lib"))]
    sources = sorted((paths.GUEST / "rdma").iterdir()) + sorted((paths.GUEST / "programs").glob("*.h"))
    key = content_key(*(p.name.encode() + p.read_bytes() for p in sources), (paths.GUEST / "Makefile").read_bytes(),
                      *(cc if arch.foreign else []))
    out = paths.cache_root() / "guest-rdma" / key
    if out.exists():
        return out
    arch.require_compiler()
    (paths.cache_root() / "guest-rdma").mkdir(parents=True, exist_ok=True)
    with atomic.staged_dir(out) as tmp:
        run_logged(["make", "-C", str(paths.GUEST), f"O={tmp}", f"CC={' '.join(cc)}", "rdma"],
                   paths.cache_root() / "guest-rdma" / "build.log", f"{arch.name} guest RDMA programs")
    return out


USERSPACE_SCHEMA = schema.Record({
    "files": schema.optional(schema.ListOf(schema.Record({
        "path": schema.required(schema.Str(r"/[^\s]+", "an absolute path or glob"),
                                "a host file, copied to the same path in the guest; a glob must match one or more"),
        "package": schema.optional(schema.Str(r"[a-z0-9][a-z0-9.+-]*", "a Debian package name"), None,
                                   "what to apt-get install when it is missing"),
    }, "a file")), [], "host files every guest image gets, ELF ones with the shared libraries they need"),
}, "a mapping")


def userspace_files(arch: Arch, root: Path = Path("/"), config: Path = USERSPACE) -> list[tuple[Path, str]]:
    """The files `config` lists ({triplet}: the architecture's library directory), found under `root` (the host's
    /, or another architecture's unpacked packages), as (file, its path in the guest); from the host's, also every
    shared library (and the loader) an ELF among them needs."""
    entries = schema.load(config, USERSPACE_SCHEMA, BuildError, empty={}).data["files"]
    found: list[tuple[Path, str]] = []
    for entry in entries:
        pattern = entry["path"].replace("{triplet}", arch.triplet)
        matches = sorted(glob.glob(str(root).rstrip("/") + pattern))
        if not matches and root == Path("/"):
            raise ToolMissing(f"{pattern} is missing ({config.name}): "
                              f"apt-get install {entry['package'] or '<its package>'}")
        if not matches:
            raise BuildError(f"{pattern} ({config.name}) is in none of the {arch.name} packages unpacked: add "
                             f"{entry['package'] or 'its package'} to configs/arches/{arch.name}.yaml's userland")
        found += [(Path(m), "/" + str(Path(m).relative_to(root))) for m in matches]
    if root != Path("/"):
        return found
    libs = [lib for f, _ in found if _is_elf(f) for lib in _shared_libs(f)]
    return sorted(set(found) | {(lib, str(lib)) for lib in libs})


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


@dataclass(frozen=True)
class Userland:
    """What every image of one architecture runs on: busybox (and its applets), dropbear, the files they need."""
    busybox: Path
    dropbear: Path
    applets: tuple[str, ...]
    files: tuple[tuple[Path, str], ...]  # (file, its path in the guest), libraries and the loader among them
    identity: bytes  # what a change of it changes: part of the image's key

    @classmethod
    def of(cls, arch: Arch) -> Userland:
        if arch.foreign:
            return cls.unpacked(arch)
        for tool in (BUSYBOX, DROPBEAR):
            if not tool.exists():
                raise ToolMissing(f"{tool} is missing: apt-get install busybox-static dropbear-bin")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        rdma = build_rdma_programs(arch)
        libs = {lib for binary in (DROPBEAR, *rdma.iterdir()) for lib in _shared_libs(binary)}
        files = sorted(set(userspace_files(arch)) | {(lib, str(lib)) for lib in libs})
        return cls(BUSYBOX, DROPBEAR, tuple(applets), tuple(files),
                   b"".join((BUSYBOX.read_bytes(), DROPBEAR.read_bytes(), USERSPACE.read_bytes(),
                             *(guest.encode() + f.read_bytes() for f, guest in files))))

    @classmethod
    def unpacked(cls, arch: Arch) -> Userland:
        """Debian's packages of `arch` (configs/arches/), every library and the loader at its own path: the host's
        ldd cannot read a foreign ELF, so the whole of their lib/ directories goes, charset modules aside."""
        folder = debian.foreign_packages(arch.name, arch.userland)
        root = folder / "root"
        busybox, dropbear = root / "bin/busybox", root / "usr/sbin/dropbear"
        for tool in (busybox, dropbear):
            if not tool.exists():
                raise BuildError(f"{tool} is missing from the {arch.name} userland: configs/arches/{arch.name}.yaml "
                                 f"must list busybox-static and dropbear-bin")
        libs = {"/" + str(f.relative_to(root)): f for d in ("lib", "usr/lib") if (root / d).is_dir()
                for f in sorted((root / d).rglob("*")) if (f.is_file() or f.is_symlink()) and "gconv" not in f.parts}
        # a link stays a link to a file of the image; one to anything else would be followed on the host: dropped
        files = [(f, guest) for guest, f in libs.items() if _link_target(f, guest) in (None, *libs)]
        files += userspace_files(arch, root)
        return cls(busybox, dropbear, busybox_applets(busybox.read_bytes()), tuple(files),
                   b"".join((f"{arch.name} {folder.name}".encode(), (folder / "versions.txt").read_bytes(),
                             USERSPACE.read_bytes())))


def busybox_applets(binary: bytes) -> tuple[str, ...]:
    """The applet names a busybox binary carries: its applet_names table, NUL-separated and sorted, which starts
    with "[" and "[[" (what `busybox --list` prints, read without running a binary the host may not execute)."""
    at = binary.find(b"[\0[[\0")
    if at < 0:
        raise BuildError("no applet table in the busybox binary: not a busybox")
    names = []
    for name in binary[at:].split(b"\0"):
        if not re.fullmatch(rb"[a-z0-9_.\[\]-]+", name):
            break
        names.append(name.decode())
    return tuple(names)


def build_image(build: KernelBuild) -> Image:
    """Everything the guest needs for this kernel build; cached by all of its inputs."""
    userland = Userland.of(build.arch)
    programs = [build_guest_programs(build.arch), build_rdma_programs(build.arch)]
    modules = image_modules(build)
    mod_tree = install_modules(build) if build.has("MODULES") else None
    pub = client_key().with_name("id_ed25519.pub")
    # The build's modules, not only its key: a build rebuilt under the same key (a user's tree edited, a cache
    # entry remade) may have new modules, and the image must carry them (an edit of built-in code keeps them).
    inputs = [b"newc, uncompressed, busybox links", FSTAB.encode(), build.key.encode(),
              modules_fingerprint(build).encode(), pub.read_bytes(), (paths.IMAGES / "init").read_bytes(),
              userland.identity, *(p.name.encode() for p in programs)]
    inputs += [m.read_bytes() for m in modules]
    out = paths.cache_root() / "images" / content_key(*inputs)
    image = Image(out / "initramfs.cpio", out / "host_key.pub", out)
    if image.initramfs.exists():
        return image
    with atomic.staged_dir(out) as tmp:
        root = tmp / "root"
        _populate(root, userland, programs, modules, mod_tree, pub)
        host_key = root / "etc/dropbear/host_key"
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], check=True, capture_output=True)
        shown = subprocess.run(["dropbearkey", "-y", "-f", str(host_key)], check=True, capture_output=True,
                               text=True).stdout
        pubkey = next(line for line in shown.splitlines() if line.startswith("ssh-"))
        (tmp / "host_key.pub").write_text(" ".join(pubkey.split()[:2]) + "\n")
        _cpio(root, tmp / "initramfs.cpio")
        shutil.rmtree(root)
        (tmp / "manifest.json").write_text(json.dumps({
            "kernel_build": str(build.dir), "release": build.release, "arch": build.arch.name,
            "guest_programs": [str(p) for p in programs], "userland": [guest for _, guest in userland.files],
            "modules": [m.name for m in modules],
        }, indent=2))
    return image


def _populate(root: Path, userland: Userland, programs: list[Path], modules: list[Path], mod_tree: Path | None,
              client_pub: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/dropbear", "proc", "sys", "dev", "tmp", "run",
              "root/.ssh", "guest/bin", "guest/modules", "lib", "lib64", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(userland.busybox, root / "bin/busybox")
    # Its applets as links in /bin, made here rather than by /init (`busybox --install` at every boot)
    for applet in userland.applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    shutil.copy(paths.IMAGES / "init", root / "init")
    shutil.copy(userland.dropbear, root / "usr/sbin/dropbear")
    guest_paths = {guest_path for _, guest_path in userland.files}
    for file, guest_path in userland.files:
        dest = root / guest_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A link whose target the image has too stays a link (a package's libfoo.so.1 -> libfoo.so.1.2.3); any
        # other is copied as the file it names (the host's libraries, which ldd names by their links)
        if _link_target(file, guest_path) in guest_paths:
            dest.symlink_to(file.readlink())
        else:
            shutil.copy(file, dest)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    (root / "etc/fstab").write_text(FSTAB)  # /init mounts them with one `mount -a`
    (root / "root/.ssh/authorized_keys").write_text(client_pub.read_text())
    os.chmod(root / "root", 0o700)
    os.chmod(root / "root/.ssh", 0o700)
    for prog in (p for d in programs for p in d.iterdir()):
        shutil.copy(prog, root / "guest/bin" / prog.name)
    for ko in modules:
        shutil.copy(ko, root / "guest/modules" / ko.name)
    if mod_tree:
        # `build` and `source` link back to the build and source trees: gigabytes the guest never reads.
        shutil.copytree(mod_tree / "lib/modules", root / "lib/modules", symlinks=True,
                        ignore=shutil.ignore_patterns("build", "source"))


def _link_target(file: Path, guest_path: str) -> str | None:
    """Where a symbolic link at `guest_path` points in the guest; None for a file that is no link."""
    return os.path.normpath(Path(guest_path).parent / file.readlink()) if file.is_symlink() else None


def _shared_libs(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"(/\S+)\s+\(0x", out)
    return [Path(p) for p in libs]


def _cpio(root: Path, dest: Path) -> None:
    """newc archive, owned by root, uncompressed; file list sorted so that the bytes are reproducible.

    Uncompressed because the guest unpacks it under TCG: gzip'd, the 23 MB image took about 1.5 s of the
    guest's boot to inflate, against about 0.3 s to copy (docs/benchmarks.md)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "".join(f"{n}\0" for n in [".", *names]).encode()
    with open(dest, "wb") as out:
        cpio = subprocess.run(["cpio", "--quiet", "--null", "-o", "-H", "newc", "-R", "0:0"], cwd=root,
                              input=listing, stdout=out)
    if cpio.returncode != 0:
        raise BuildError(f"creating {dest} failed")


def build_bare_image(arch: Arch) -> Path:
    """The bare-boot reference's initramfs: /dev/console and a static /init that prints one line and
    powers off (images/bare-init.c); nothing else. Cached by its source, compiler and flags."""
    out = paths.cache_root() / "bare" / content_key(BARE_INIT.read_bytes(), " ".join(BARE_CFLAGS),
                                                    *([arch.gcc] if arch.foreign else []))
    initramfs = out / "initramfs.cpio"
    if initramfs.exists():
        return initramfs
    arch.require_compiler()
    with atomic.staged_dir(out) as tmp:
        run_logged([arch.gcc, *BARE_CFLAGS, "-o", str(tmp / "init"), str(BARE_INIT)], tmp / "build.log",
                   "the bare-boot /init")
        (tmp / "initramfs.cpio").write_bytes(newc([
            ("dev", 0o040755, b""),
            ("dev/console", 0o020600, b""),  # character device 5:1, the kernel's console for /init
            ("init", 0o100755, (tmp / "init").read_bytes()),
        ]))
    return initramfs


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, content), owned by root; a character device is /dev/console
    (5:1). Written here because the cpio tool takes device nodes from the file system, and making one
    there needs root."""
    def entry(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0)) -> bytes:
        fields = (ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
        return header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)

    out = b"".join(entry(n, name, mode, data, (5, 1) if mode & 0o170000 == 0o020000 else (0, 0))
                   for n, (name, mode, data) in enumerate(entries, 1))
    return out + entry(0, "TRAILER!!!", 0, b"")
