"""Untrusted build steps run as an unprivileged uid, in a mount and network namespace of their own.

What is untrusted: a tree made by applying a patch series (patches.py, `patched:<key>` with a base) and a
tree imported from a build artifact (artifact.py). Their Makefiles, Kconfig `$(shell ...)`,
scripts/pahole-version.sh, the host programs an artifact ships (fixdep, modpost, objtool) and anything a
series adds run through `Jail`: the kernel build and its olddefconfig, objtool, `kernelrelease`, `make
headers`, `modules_install`, the guest modules' `M=` builds against such a build, the static programs
built from such a tree, the configuration stage (`make olddefconfig`/`allnoconfig` in its scratch
directory) and every `$(shell,...)` kconfiglib evaluates while it parses such a tree (`functions`
below, which kconfiglib loads through KCONFIG_FUNCTIONS).

Trusted, built as before: Debian's trees, the user's own tree (KSRC) and the snapshot of its git HEAD
(a `patched:` tree without a base). Their build directories are in the shared cache, root's, and a
sandboxed build must not be able to write them (nor their ccache: see below).

The mechanism, and why:
- **An unprivileged uid** (UID, no passwd entry: nothing is added to the system). Root without
  capabilities is not enough: euid 0 still passes owner checks (sysctl's test_perm lets euid 0 write
  /proc/sys/kernel/core_pattern, a full escape; every root-owned file in the cache is writable).
  setpriv (util-linux) sets uid, gid, no supplementary groups, no_new_privs, an empty bounding set.
- **bubblewrap as root, without a user namespace**: a user namespace made by root maps the build's uid
  to kuid 0 outside, which is root again for every check above. bwrap run by root makes the mount, pid,
  net, ipc and uts namespaces directly and keeps only CAP_SETUID/CAP_SETGID for setpriv, which drops them.
  In there / is read-only (every submount too), /tmp a private tmpfs, /proc the new pid namespace's
  (/proc/sys read-only too: a second lock on core_pattern and its kind), /dev a minimal one, root's home
  and the harness cache an empty tmpfs in which only the step's own paths appear: the tree and the build
  it reads, read-only; the directories it writes (`writable`); root's ccache and rustup toolchain,
  read-only. No network: only a loopback of its own. When the step ends its pid namespace ends, and
  every process it left is killed with it. Cost: a few ms a step, and a walk of the directory it wrote
  (0.3 s for a 6.12 build directory of 6,000 entries).
- **The same answers as unconfined**: Kconfig's probes must see what the base's configuration saw, or a
  patched tree's .config differs and its build starts cold: rustc (RUSTC_VERSION) is root's rustup,
  shown read-only; kconfiglib runs a confined `$(shell,...)` in the jail's /tmp, as Kbuild runs conf in
  the build directory (cc-option makes its .tmp_$$ in the working directory; the tree is read-only).
- **ccache**: a sandboxed build reads root's ccache (read-only, CCACHE_READONLY) and stores nothing.
  It keeps the hits the compare path lives on (175 of the 211 compilations of a seeded 6.12 build of a
  one-comment series, as unconfined), and an untrusted build cannot poison entries that trusted builds
  would later use; a shared writable ccache would let it. A file the series changed is compiled each
  time a patched build needs it (once: its object then stays in that build directory).
- **Reading back**: the directories a step writes are lent to UID for the step (`lent`) and taken back
  after it, before the harness reads or writes anything there: every entry root-owned again, setuid,
  setgid and world-write bits cleared, and the step fails if it left a symlink that leads outside that
  directory and the tree, or a fifo, socket or device (a symlink planted as build.log or .harness-built.json
  would make root write or read where the build chose). No untrusted process runs meanwhile. A stamp's
  release names a directory of the image: `release_in` checks it. A step is not given the harness's
  credentials (its kernel's console reaches the results, which CI may publish).

Not root: nothing to drop (the harness already runs as its user); steps run as before and `describe()`
says so. Root without bwrap or setpriv: an error naming the package, never a silent fallback to root.
What still runs as root on an untrusted tree (git apply of the series, kconfiglib's parser, QEMU running
its kernel, the artifact's extraction) is listed in the security notes (docs: "untrusted code: builds").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness import paths
from harness.errors import UserError


class KernelTree(Protocol):
    """What this module reads of a source.KernelTree (importing it would make kconfig -> sandbox -> source a cycle)."""

    @property
    def path(self) -> Path: ...
    @property
    def imported(self) -> bool: ...
    @property
    def base(self) -> object | None: ...

UID = GID = 64434  # no passwd entry; outside the ranges Debian's adduser hands out (1000-59999, 100-999)
USER = "harness-sandbox"  # what `whoami`-less tools are told (KBUILD_BUILD_USER, USER, LOGNAME)
_STRIPPED_MODE = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH
# What a step is not given of the harness's environment: credentials a CI or a shell may hold
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|_KEY$|_KEY_|^AWS_|^SSH_|^GPG|^XAUTHORITY$|^DISPLAY$")


class SandboxError(UserError):
    pass


def untrusted(tree: KernelTree) -> bool:
    """A tree whose code the harness did not get from Debian or the user: a series applied, or an artifact."""
    return tree.imported or tree.base is not None


def confining() -> bool:
    """Whether sandboxed steps drop privileges: only root has any to drop."""
    return os.geteuid() == 0


def describe() -> str:
    if confining():
        return f"untrusted build steps run as uid {UID} in a namespace of their own (harness/kernel/sandbox.py)"
    return (f"the harness runs as uid {os.geteuid()}: untrusted build steps run as that user, with its rights, "
            "and no namespace (only root has privileges to drop)")


@dataclass(frozen=True)
class Jail:
    """One untrusted step's view: `readable` paths appear read-only, `writable` ones writable (lent to UID)."""

    readable: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()

    def wrap(self, cmd: Sequence[str], cwd: Path | None = None) -> list[str]:
        if not confining():
            return list(cmd)
        missing = [tool for tool in ("bwrap", "setpriv") if not shutil.which(tool)]
        if missing:
            raise SandboxError(f"{' and '.join(missing)} missing: untrusted build steps need it to run unprivileged "
                               "(apt-get install bubblewrap util-linux)")
        return [*self.bwrap_args(cwd), "--", *setpriv_args(), "--", *cmd]

    def bwrap_args(self, cwd: Path | None = None) -> list[str]:
        args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--ro-bind", "/proc/sys", "/proc/sys", "--perms", "1777", "--tmpfs", "/tmp"]
        for mask in hidden():
            args += ["--perms", "0755", "--tmpfs", str(mask)]
        masks = [Path("/tmp"), *hidden()]  # where a path must have its directories made to appear
        bound: list[Path] = []
        ccache = Path(trusted_ccache_dir(os.environ))  # read-only, for its hits (env() says so to ccache)
        readable = [*self.readable, *(p for p in (ccache, *toolchains(os.environ).values()) if p.is_dir())]
        for path, how in [*((p, "--ro-bind") for p in readable), *((p, "--bind") for p in self.writable)]:
            real = path.resolve()
            args += [*_parents(real, masks, bound), how, str(real), str(real)]
            bound.append(real)
            if path.is_absolute() and path != real and not any(path.is_relative_to(b) for b in bound):
                # a link the command names (builds/VERSION-KEY -> the tree's build directory)
                args += [*_parents(path, masks, bound), "--symlink", str(real), str(path)]
                bound.append(path)
        args += ["--chdir", str((cwd or (self.writable or self.readable or (Path("/"),))[0]).resolve())]
        # Only setpriv needs these, to become UID; it drops them (and every other) before the step runs
        return [*args, "--cap-add", "CAP_SETUID,CAP_SETGID"]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The step's environment: no passwd entry needed, root's ccache read-only, temporary files private."""
        env = dict(base)
        if not confining():
            return env
        for name in [n for n in env if _SECRET_NAME.search(n)]:
            del env[name]  # its kernel's console reaches the results, which CI may publish
        env.update({name: str(path) for name, path in toolchains(env).items()})
        env.update({"HOME": "/tmp", "USER": USER, "LOGNAME": USER, "KBUILD_BUILD_USER": USER, "TMPDIR": "/tmp",
                    "CCACHE_DIR": trusted_ccache_dir(env), "CCACHE_READONLY": "1", "CCACHE_TEMPDIR": "/tmp"})
        return env

    @contextmanager
    def lent(self, allowed: Sequence[Path] = ()) -> Iterator[None]:
        """The writable directories belong to UID for the block, and to root again after it, checked
        (reclaim); `allowed` are where their symlinks may lead besides themselves (the tree)."""
        if not confining():
            yield
            return
        for path in self.writable:
            _chown_tree(path, UID, GID)
        try:
            yield
        finally:
            for path in self.writable:
                reclaim(path, (*allowed, *self.readable))

    def settle(self, allowed: Sequence[Path] = ()) -> None:
        """Take back a writable directory that a step was lent and never gave back (the harness was killed
        meanwhile), before root writes in it."""
        for path in self.writable:
            if confining() and path.exists() and path.stat().st_uid == UID:
                reclaim(path, (*allowed, *self.readable))

    def run(self, cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
            allowed: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
        """Run one step to completion, its output captured (short steps: kernelrelease, gcc, a probe)."""
        with self.lent(allowed):
            return subprocess.run(self.wrap(cmd, cwd), capture_output=True, text=True, cwd=cwd,
                                  env=self.env(env if env is not None else os.environ))


def run(jail: Jail | None, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """A short step to completion, its output captured: in `jail`, or as before without one (a trusted tree)."""
    return jail.run(cmd) if jail else subprocess.run(cmd, capture_output=True, text=True)


def lent(jail: Jail | None) -> contextlib.AbstractContextManager[None]:
    """`jail.lent()`, or nothing to lend without a jail."""
    return jail.lent() if jail else contextlib.nullcontext()


def wrap(jail: Jail | None, cmd: Sequence[str]) -> list[str]:
    return jail.wrap(cmd) if jail else list(cmd)


def env(jail: Jail | None, base: Mapping[str, str]) -> dict[str, str]:
    return jail.env(base) if jail else dict(base)


def release_in(stamp: Path) -> str:
    """The kernel release a build's stamp names (an untrusted build could write one): it names
    lib/modules/<release>, so it must be one path component, as Kbuild makes it."""
    release = json.loads(stamp.read_text()).get("release")
    if not isinstance(release, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+~-]*", release):
        raise SandboxError(f"{stamp}: {release!r} is not a kernel release; remove {stamp.parent} to rebuild it")
    return release


def output(jail: Jail | None, cmd: Sequence[str]) -> str:
    """A short step's stdout, stripped (`run`); SandboxError with its stderr if it fails."""
    proc = run(jail, cmd)
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def _parents(path: Path, masks: Sequence[Path], bound: Sequence[Path]) -> list[str]:
    """bwrap's --dir for every directory above `path` inside a mask (an empty tmpfs) not yet there."""
    mask = next((m for m in masks if path.is_relative_to(m)), None)
    if mask is None:
        return []
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent.is_relative_to(mask) and parent != mask and not any(parent.is_relative_to(b) for b in bound):
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def for_tree(tree: KernelTree, readable: Sequence[Path] = (), writable: Sequence[Path] = ()) -> Jail | None:
    """The jail of a step on `tree` (which it reads, with `readable`; it writes `writable`); None: run it as
    before (a trusted tree, or a harness that is not root: said once)."""
    if not untrusted(tree):
        return None
    if not confining():
        if not _said_degraded:
            print(f"harness: {describe()}", file=sys.stderr, flush=True)
            _said_degraded.append(True)
        return None
    if stat.S_IMODE(tree.path.stat().st_mode) & 0o005 != 0o005:
        tree.path.chmod(0o755)  # a patched tree's top is a mkdtemp() directory (0700); its files are 0644
    jail = Jail((tree.path, *readable), tuple(writable))
    jail.settle()  # a directory a killed harness left lent is taken back before root writes in it
    return jail


_said_degraded: list[bool] = []


def building(tree: KernelTree, outdir: Path) -> Jail | None:
    """The jail of a step that builds `tree` in `outdir` (for_tree)."""
    return for_tree(tree, writable=(outdir,))


def toolchains(env: Mapping[str, str]) -> dict[str, Path]:
    """Root's rustup toolchain (its home is hidden), read-only: Kconfig's probes read rustc's version into the
    .config (RUSTC_VERSION), and a sandboxed tree must see the toolchain its base was configured with, or its
    .config differs and its build cannot start from the base's."""
    found = {}
    for name, default in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        path = Path(env.get(name) or Path.home() / default)
        if path.is_dir():
            found[name] = path.resolve()
    return found


def setpriv_args() -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", "--no-new-privs", "--inh-caps=-all",
            "--bounding-set=-all"]


def hidden() -> list[Path]:
    """What a step must not see at all (an empty tmpfs over it): root's home and the harness cache."""
    found: list[Path] = []
    for path in (Path.home().resolve(), paths.cache_root().resolve()):
        if path != Path("/") and path.is_dir() and not any(path.is_relative_to(f) for f in found):
            found = [f for f in found if not f.is_relative_to(path)] + [path]
    return found


def trusted_ccache_dir(env: Mapping[str, str]) -> str:
    return env.get("CCACHE_DIR") or str(paths.cache_root() / "ccache")


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    top = top.resolve()
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def reclaim(top: Path, allowed: Sequence[Path] = ()) -> None:
    """Take back a directory a step wrote: root-owned, no setuid/setgid/world-write bit, and no symlink out of
    it (or `allowed`), no fifo, socket or device in it. SandboxError names what the step left."""
    top = top.resolve()  # builds/VERSION-KEY is a link to the directory in the tree: walk the directory
    roots = [top, *(p.resolve() for p in allowed)]
    bad: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.normpath(os.path.join(dirpath, os.readlink(path)))
                if not any(Path(target).is_relative_to(r) for r in roots):
                    bad.append(f"{path} -> {os.readlink(path)} (a symlink out of the build)")
                    os.unlink(path)
                    continue
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                bad.append(f"{path} (a {_kind(st.st_mode)})")
                os.unlink(path)
                continue
            _own(path, st)
    _own(str(top), os.lstat(top))
    if bad:
        raise SandboxError(f"an untrusted build step left in {top} what no build makes; removed, and the step "
                           "counts as failed:\n  " + "\n  ".join(bad[:20]))


def _own(path: str, st: os.stat_result) -> None:
    if st.st_uid != 0 or st.st_gid != 0:
        os.lchown(path, 0, 0)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & _STRIPPED_MODE:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_STRIPPED_MODE)


def _kind(mode: int) -> str:
    return "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device file"


# --- kconfiglib's $(shell,...), confined while it parses an untrusted tree -----------------------------------

_kconfig_jail: list[Jail | None] = []  # the parse under way (kconfig.load_tree): its jail, None for a trusted tree


@contextmanager
def kconfig_shell(jail: Jail | None) -> Iterator[dict[str, str]]:
    """While kconfiglib parses a tree: the environment that routes its `$(shell,...)` through `functions`
    (also for a trusted tree: no `kconfigfunctions` module is looked up where the tree could put one)."""
    _kconfig_jail.append(jail)
    try:
        yield {"KCONFIG_FUNCTIONS": __name__}
    finally:
        _kconfig_jail.pop()


def _shell_fn(kconf: Any, _: str, command: str) -> str:
    """kconfiglib's own _shell_fn (a shell runs the Kconfig's command), confined when the tree is untrusted."""
    jail = _kconfig_jail[-1] if _kconfig_jail else None
    cmd = ["/bin/sh", "-c", command]
    # Kbuild runs conf in the build directory, and Kconfig.include's cc-option makes its .tmp_$$ there: the
    # jail's is its private /tmp (the tree is read-only in there, and every probe would fail)
    proc = jail.run(cmd, cwd=Path("/tmp")) if jail else subprocess.run(cmd, capture_output=True, text=True)
    if proc.stderr:
        kconf._warn(f"'{command}' wrote to stderr: {proc.stderr.strip()}", kconf.filename, kconf.linenr)
    return "\n".join(proc.stdout.splitlines()).rstrip("\n").replace("\n", " ")


functions = {"shell": (_shell_fn, 1, 1)}  # what kconfiglib imports from KCONFIG_FUNCTIONS
