"""Kernel builds: out of tree with ccache, one build directory per (tree identity, final .config).

The config stage (config.py) hands over a verified .config and its content key; a second run finds
that build finished and does nothing, and a later change to a user's tree rebuilds it incrementally.
The stamp that marks a build finished is written last, so an interrupted build is never taken for a
good one. Also here: the make command line and ccache, guest modules built against a build,
modules_install for the image, and the header of this tree's event names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness import atomic, locks, paths, schema
from harness.errors import InfraError, UserError
from harness.kernel import kconfig, sandbox
from harness.kernel.arch import HOST, Arch, arch_of, load_arch
from harness.kernel.source import KernelTree

STAMP = ".harness-built.json"
BUILD_STARTED = ".harness-build-started"  # touched as make starts: a later edit to a user's tree is newer
IN_TREE_PREFIX = "harness-build-"  # a build directory inside a tree the harness owns (build_dir)


class BuildError(UserError):
    pass


class ToolMissing(InfraError):
    """A package the machine needs is not installed (the message says which): the machine's to fix."""


class DiskFull(InfraError):
    """A build step ran out of disk space: the machine's to fix, and the same build then succeeds."""


NO_SPACE = "No space left on device"  # what the compiler, the linker and cp say (strerror(ENOSPC))


@dataclass(frozen=True)
class KernelBuild:
    tree: KernelTree
    dir: Path
    key: str
    release: str

    @property
    def config(self) -> Path:
        return self.dir / ".config"

    @property
    def arch(self) -> Arch:
        return arch_of(self.config_values())

    @property
    def kernel_image(self) -> Path:
        """What QEMU boots with -kernel: the bzImage of x86-64, the Image of arm64."""
        return self.dir / self.arch.image_path

    def config_values(self) -> dict[str, str]:
        return kconfig.read_config_values(self.config)

    def has(self, symbol: str) -> bool:
        return self.config_values().get(symbol, "n") in ("y", "m")


def ccache_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(paths.cache_root() / "ccache"))
    env.setdefault("CCACHE_MAXSIZE", "10G")
    # Builds of two copies of a tree differ only in their directory, which debug info would otherwise hash
    env.setdefault("CCACHE_NOHASHDIR", "1")
    return env


def ccache_outcomes(stats_log: Path) -> dict[str, int]:
    """Compilations ccache answered from its cache (hits) and had to run (misses), from one build's
    CCACHE_STATSLOG: the global counters would count every other build running meanwhile."""
    lines = stats_log.read_text().splitlines() if stats_log.exists() else []
    hits = sum(line in ("direct_cache_hit", "preprocessed_cache_hit") for line in lines)
    return {"hits": hits, "misses": lines.count("cache_miss")}


def make_cmd(tree: KernelTree, outdir: Path, *targets: str, jobs: int | None = None,
             arch: Arch | None = None) -> list[str]:
    cmd = ["make", "-C", str(tree.path), f"O={outdir}", *(arch or load_arch()).make_vars()]
    if jobs:
        cmd.append(f"-j{jobs}")
    return [*cmd, *targets]


@dataclass(frozen=True)
class Configured:
    """What a build takes: a tree's verified final .config (made by config.py), its content key, and why it is what
    it is (harness-config-why.txt)."""

    tree: KernelTree
    config: Path
    key: str
    why: str


def build_kernel(configured: Configured, jobs: int | None = None) -> KernelBuild:
    """make the architecture's image and the modules for the configured tree; nothing to do for a finished build
    of a Debian tree."""
    if (host := os.uname().machine) != HOST:
        raise BuildError(f"this host is {host}: the harness builds on an x86_64 host (another architecture "
                         "cross-built: configs/arches/)")
    tree, key = configured.tree, configured.key
    if not (_build_link(tree, key) / STAMP).exists() or not (tree.immutable or unchanged_since_build(tree, key)):
        # One lock per build directory: other configs of the same tree build meanwhile, and a second
        # run of this config waits for the first rather than build it twice.
        link = _build_link(tree, key)
        with locks.locked(build_lock(link), f"building kernel {tree.version} ({tree.identity}) in {link}",
                           log=link / "build.log"):
            outdir = build_dir(tree, key)
            # or the process we waited for built it
            if not (outdir / STAMP).exists() or not (tree.immutable or unchanged_since_build(tree, key)):
                atomic.write_text(outdir / "harness-config-why.txt", configured.why)
                seeded = None
                if tree.base and not (outdir / "Makefile").exists():
                    base_key = config_key(tree.base, configured.config.read_text())
                    base = paths.cache_root() / "builds" / f"{tree.version}-{base_key}"
                    if (base / STAMP).exists():
                        print(f"seeding {outdir} from the base's build {base}", file=sys.stderr, flush=True)
                        seed_build(outdir, base)
                        seeded = str(base)
                        # The base may have been built after the patches were applied (compare builds the
                        # base first): what they changed must be newer than every object copied, or make
                        # keeps the base's objects.
                        for name in tree.changed:
                            if (tree.path / name).is_file():  # the patched tree's own copy (patches._unshare)
                                os.utime(tree.path / name)
                arch = arch_of(kconfig.read_config_values(configured.config))
                arch.require_compiler()
                _make_kernel(tree, outdir, configured.config, key, jobs, seeded, arch=arch)
    outdir = build_dir(tree, key)
    atomic.write_text(outdir / "harness-config-why.txt", configured.why)
    return KernelBuild(tree, outdir, key, sandbox.release_in(outdir / STAMP))


def unchanged_since_build(tree: KernelTree, key: str) -> bool:
    """No file of a user's tree is newer than the start of its last finished build of this config: make
    would find nothing to do (its no-op walk of the tree takes seconds), and the stamp, which the image's
    key reads, stays as it is. Checked as make checks, by modification times, before any make runs."""
    started = build_dir(tree, key) / BUILD_STARTED
    if not started.exists():
        return False
    top = str(tree.path)  # its own build directories inside it (an owned clone's) are not the tree's files
    newer = subprocess.run(["find", top, "(", "-path", f"{top}/.git", "-o", "-path", f"{top}/{IN_TREE_PREFIX}*", ")",
                            "-prune", "-o", "-newer", str(started), "-type", "f", "-print", "-quit"],
                           capture_output=True, text=True)
    return newer.returncode == 0 and not newer.stdout.strip()


def build_lock(build_dir: Path) -> Path:
    """The lock of a build directory: exclusive while make writes it, shared while an image is made from it."""
    return paths.cache_root() / "locks" / f"build-{build_dir.name}.lock"


def _build_link(tree: KernelTree, key: str) -> Path:
    return paths.cache_root() / "builds" / f"{tree.version}-{key}"


def build_dir(tree: KernelTree, key: str) -> Path:
    """The build directory of `tree` for the config `key`: builds/VERSION-KEY, made if missing.

    For a tree the harness owns (a Debian tree, a patched copy: immutable), that name links to a directory
    directly inside the tree. Kbuild then spells the source tree `..` on every command line (its Makefile:
    "building in a subdirectory of the source tree"), so a copy of the tree at another path compiles with
    the same command lines: `harness compare` builds a patched copy on the base's objects and ccache
    entries, and `harness bisect`'s clone (owned: the harness's own, though it changes) the first commit
    on the Debian tree's. A user's tree is built beside it, out of tree, and nothing is written into it.
    """
    link = _build_link(tree, key)
    link.parent.mkdir(parents=True, exist_ok=True)
    # (a finished build directory that is not a link: one made before links)
    if not (tree.immutable or tree.owned) or ((link / STAMP).exists() and not link.is_symlink()):
        link.mkdir(exist_ok=True)
        return link
    if link.is_dir() and not link.is_symlink():  # an unfinished build of the old layout
        shutil.rmtree(link)
    real = tree.path / f"{IN_TREE_PREFIX}{key}"
    real.mkdir(exist_ok=True)
    if not (link.is_symlink() and os.readlink(link) == str(real)):
        tmp = link.with_name(f".tmp-{link.name}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        os.replace(tmp, link)
    return link


def seed_build(outdir: Path, base: Path) -> None:
    """Fill an empty build directory with a copy of a finished build of the same .config (the base of a
    patched tree): Kbuild then recompiles only what the patches change. The harness's own products
    (modules staging, guest modules, the stamp, the logs) are left out: they are remade for this kernel."""
    entries = [p for p in base.iterdir()
               if not p.name.startswith(("harness-", ".harness-")) and not p.name.endswith(".log")]
    if entries:
        subprocess.run(["cp", "-a", "--", *map(str, entries), str(outdir)], check=True)


def _keep_objtool(tree: KernelTree, outdir: Path, base: Path, log: Path, env: dict[str, str],
                  arch: Arch | None = None) -> None:
    """Rebuild objtool in a seeded build, then give it back the base's mtime if the series left tools/ alone.

    Unlike the kernel's objects, objtool is built with absolute paths (the top Makefile's objtool_O), so a
    copy of the build at another path rebuilds it; every object depends on the objtool binary, and a new
    one would recompile the whole kernel. Built from the same sources with the same flags it is the same
    program (only its debug info names another directory), so the old mtime tells Kbuild the truth."""
    built, before = outdir / "tools/objtool", base / "tools/objtool"
    if not (before / "objtool").exists() or any(f.startswith("tools/") for f in tree.changed):
        return
    run_logged(make_cmd(tree, outdir, "tools/objtool", arch=arch), log, "objtool", env=env,
               jail=sandbox.building(tree, outdir))
    for path in built.rglob("*"):  # its objects too, or the next make relinks it
        old = before / path.relative_to(built)
        if path.is_file() and not path.is_symlink() and old.is_file():
            st = old.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _make_kernel(tree: KernelTree, outdir: Path, config: Path, key: str, jobs: int | None,
                 seeded: str | None = None, arch: Arch | None = None) -> None:
    """make IMAGE modules in outdir (incremental when it was built before); the stamp is written last."""
    arch = arch or load_arch()
    jail = sandbox.building(tree, outdir)  # an untrusted tree's build: sandbox.py
    from_scratch = not (outdir / "vmlinux").exists()  # before this build: no objects to reuse (or seeded)
    previous = _read_stamp(outdir)
    (outdir / BUILD_STARTED).unlink(missing_ok=True)  # a build that does not finish leaves none
    started_mark = outdir / f"{BUILD_STARTED}.tmp"
    started_mark.touch()
    shutil.copyfile(config, outdir / ".config")
    log = outdir / "build.log"
    print(f"building kernel {tree.version} ({tree.identity}) in {outdir}\n  log: {log}", file=sys.stderr, flush=True)
    started = time.monotonic()
    stats = outdir / ".harness-ccache.log"  # this build's own ccache outcomes (others may run at once)
    stats.unlink(missing_ok=True)
    env = {"CCACHE_STATSLOG": str(stats)}
    run_logged(make_cmd(tree, outdir, "olddefconfig", arch=arch), log, "olddefconfig", env=env, jail=jail)
    if seeded:
        _keep_objtool(tree, outdir, Path(seeded), log, env, arch)
    config_text = (outdir / ".config").read_text()
    expected = expected_build(tree, key, config_text, previous) if from_scratch and not seeded else None
    progress = BuildProgress("kernel build", expected)
    run_logged(make_cmd(tree, outdir, arch.image, "modules", jobs=jobs or os.cpu_count() or 1, arch=arch), log,
               "kernel build", progress=progress, env=env, jail=jail)
    release = sandbox.output(sandbox.for_tree(tree, readable=(outdir,)),
                             make_cmd(tree, outdir, "-s", "kernelrelease", arch=arch))
    atomic.write_text(outdir / STAMP, json.dumps({
        "release": release, "tree": str(tree.path), "identity": tree.identity, "key": key,
        "build_s": round(time.monotonic() - started, 1),
        "ccache": ccache_outcomes(stats),
        "seeded": seeded,  # the base build this one started from (a patched tree), or None
        # What the next build's estimate reads (expected_build): this build's size, and how it began
        "steps": progress.steps, "compiled": progress.compiled, "from_scratch": from_scratch and not seeded,
        "config_sha": config_sha(config_text), "series": tree.series,
        # the estimate this build printed first and last, in seconds of the whole build (None: it had none)
        "estimate": {"source": expected.source if expected else None,
                     "first_s": progress.first_estimate_s, "last_s": progress.last_estimate_s},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2))
    started_mark.rename(outdir / BUILD_STARTED)  # its mtime is the build's start: what unchanged_since_build reads


def modules_fingerprint(build: KernelBuild) -> str:
    """What the image takes from a build: its release and its modules, each by size and modification time
    (Kbuild rewrites a .ko only when it relinks it). A user's tree rebuilt after an edit of built-in code
    (mm/) keeps it, so its modules staging and image are reused; a relinked module changes it."""
    order = build.dir / "modules.order"
    names = order.read_text().split() if order.exists() else []
    parts = [build.release, *names]
    for name in names:
        ko = build.dir / Path(name).with_suffix(".ko")
        st = ko.stat() if ko.exists() else None
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:missing")
    return content_key(*parts)


def install_modules(build: KernelBuild) -> Path:
    """`make modules_install` into a staging tree (lib/modules/<release>/...) for the image."""
    dest = build.dir / "harness-modules"
    # made from these very modules: a tree rebuilt under the same key must not ship the old ones
    made_from = dest / ".harness-built-from.json"
    stamp = modules_fingerprint(build)
    # An imported build (harness kernel --import) has the packer's staging tree and no modules.order or .ko
    # files to make one from, nor to fingerprint: its staging tree is the one to ship.
    imported = not (build.dir / "modules.order").exists()
    if (dest / "lib/modules" / build.release / "modules.dep").exists() and made_from.exists() \
            and (made_from.read_text() == stamp or imported):
        return dest
    with atomic.staged_dir(dest) as tmp:
        run_logged(make_cmd(build.tree, build.dir, f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1",
                            "DEPMOD=/sbin/depmod", "modules_install", arch=build.arch), build.dir / "build.log",
                   "modules_install",
                   jail=sandbox.for_tree(build.tree, readable=(build.dir,), writable=(tmp,)))
        (tmp / made_from.name).write_text(stamp)
    return dest


_ENUM_RE = re.compile(r"enum\s+mmu_notifier_event\s*\{(.*?)\}", re.DOTALL)


def parse_event_enum(header_text: str) -> list[str]:
    """Names of `enum mmu_notifier_event`, in order, as this kernel spells them (MMU_NOTIFY_ prefix kept)."""
    m = _ENUM_RE.search(header_text)
    if not m:
        raise BuildError("no enum mmu_notifier_event in include/linux/mmu_notifier.h")
    body = re.sub(r"/\*.*?\*/", "", m[1], flags=re.DOTALL)
    return re.findall(r"\b(MMU_NOTIFY_[A-Z_]+)\b\s*(?:=\s*\w+\s*)?,?", body)


def event_names_header(srctree: Path) -> str:
    """The probe's view of this tree's notifier API: the event names of its enum, and whether its interval
    notifier has the two-pass form (7.x: invalidate_start/invalidate_finish)."""
    header = (srctree / "include/linux/mmu_notifier.h").read_text()
    rows = "\n".join(f'\t[{n}] = "{n.removeprefix("MMU_NOTIFY_")}",' for n in parse_event_enum(header))
    two_pass = "#define MMU_PROBE_TWO_PASS 1\n" if has_two_pass_notifier(header) else ""
    return ("/* Generated by the harness from this tree's include/linux/mmu_notifier.h. */\n"
            f"static const char *const mmu_probe_event_names[] = {{\n{rows}\n}};\n{two_pass}")


def has_two_pass_notifier(header: str) -> bool:
    """struct mmu_interval_notifier_ops has invalidate_finish (upstream 7aba71dbc416, in 7.x)."""
    ops = re.search(r"struct mmu_interval_notifier_ops\s*\{(.*?)\};", header, re.S)
    return bool(ops and re.search(r"\(\s*\*\s*invalidate_finish\s*\)", ops[1]))


def run_logged(cmd: Sequence[str], log: Path, what: str, progress: BuildProgress | None = None,
               env: dict[str, str] | None = None, jail: sandbox.Jail | None = None) -> None:
    """Run a build step with its output appended to `log`; on failure show the tail and the log's path.
    With `progress`, a line on stderr every 30 s says how far the build got (stdout is for results). In `jail`."""
    with open(log, "a") as out, sandbox.lent(jail):
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(sandbox.wrap(jail, cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=sandbox.env(jail, {**ccache_env(), **(env or {})}))
        assert proc.stdout
        if progress:
            progress.start()
        for line in proc.stdout:
            out.write(line)
            if progress:
                progress.line(line)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        if NO_SPACE in tail:  # the machine's disk, not the tree: the same build succeeds with room
            raise DiskFull(f"{what} failed: the disk is full (exit {rc}); last lines of {log}:\n{tail}")
        raise BuildError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")
    if progress:
        progress.done()


# Kbuild's quiet lines, one per step: "  CC      mm/rmap.o", "  CC [M]  lib/test_hmm.o", "  LD      vmlinux.o"
_STEP_RE = re.compile(r"  [A-Z][A-Z0-9_]*(?: \[M\])?\s")
ESTIMATES = paths.CONFIGS / "build-estimates.yaml"
ESTIMATES_SCHEMA = schema.ListOf(schema.Record({
    "series": schema.required(schema.Str(r"\d+\.\d+", 'a kernel series "X.Y" (quoted)'), "the kernel series"),
    "config": schema.required(schema.Str(r"[0-9a-f]{16}", "16 hex digits (quoted if all digits)"),
                              "the first 16 hex digits of the sha256 of the final .config (the stamp's config_sha)"),
    "what": schema.required(schema.Str(), "which build it was"),
    "steps": schema.required(schema.Int(min=1), "Kbuild's quiet lines (CC, LD, ...) in that build's log"),
    "seconds": schema.required(schema.Number(positive=True), "its wall time, cold ccache, 2 cores (say where)"),
}, "a measured build"))
PROGRESS_EVERY_S = 30.0
RATE_FROM = 0.10  # below this fraction of the expected steps the expected seconds say more than the rate so far


@dataclass(frozen=True)
class Expected:
    """What a build from scratch is expected to take, and where the figures come from."""
    steps: int
    seconds: float
    source: str


def config_sha(config_text: str) -> str:
    """The final .config's own hash (no tree in it): the same config of a copy of a tree has the same one."""
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


def _read_stamp(build: Path) -> dict | None:
    try:
        return json.loads((build / STAMP).read_text())
    except (OSError, ValueError):
        return None


def expected_build(tree: KernelTree, key: str, config_text: str, previous: dict | None = None) -> Expected | None:
    """The size and duration of a build from scratch of this .config, from the best evidence there is:
    the previous build of the same tree and config; a build of the same .config from another tree in this
    cache (a copy of a tree); the figures of configs/build-estimates.yaml, measured from real builds; else
    the nearest of this series there (a rough guide, said so). None: nothing to go by."""
    if previous and previous.get("from_scratch") and previous.get("steps"):
        return Expected(previous["steps"], previous["build_s"], "the previous build of this tree and config")
    sha = config_sha(config_text)
    for stamp in sorted((paths.cache_root() / "builds").glob(f"*/{STAMP}")):
        other = _read_stamp(stamp.parent)
        if other and other.get("config_sha") == sha and other.get("from_scratch") and other.get("steps"):
            return Expected(other["steps"], other["build_s"], f"a build of the same .config in {stamp.parent}")
    table = schema.load(ESTIMATES, ESTIMATES_SCHEMA, BuildError, empty=[]).data if ESTIMATES.exists() else []
    for row in table:
        if row["config"] == sha:
            return Expected(row["steps"], row["seconds"], f"{ESTIMATES.name}: {row['what']}")
    same_series = [row for row in table if str(row["series"]) == tree.series]
    if same_series:
        row = same_series[0]
        return Expected(row["steps"], row["seconds"], f"{ESTIMATES.name}: {row['what']}, another config of "
                        f"{tree.series} (a rough guide)")
    return None


class BuildProgress:
    """Counts a build's steps as make prints them and, every PROGRESS_EVERY_S, says on stderr how far it got
    and, with an Expected, when it should end: the expected seconds until RATE_FROM of the steps are done,
    then the rate so far (the machine's load is in it)."""

    def __init__(self, what: str, expected: Expected | None, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, out: TextIO | None = None) -> None:
        self.what, self.expected, self.every_s, self.clock = what, expected, every_s, clock
        self.out = out
        self.steps = self.compiled = 0
        self.started = self.last_report = 0.0
        self.first_estimate_s: float | None = None
        self.last_estimate_s: float | None = None

    def start(self) -> None:
        self.started = self.last_report = self.clock()
        if self.expected:
            self._say(f"expecting about {self.expected.steps} steps and {self.expected.seconds:.0f} s "
                      f"(from {self.expected.source})")
            self.first_estimate_s = self.last_estimate_s = float(self.expected.seconds)

    def line(self, line: str) -> None:
        if _STEP_RE.match(line):
            self.steps += 1
            self.compiled += line.startswith("  CC")
        now = self.clock()
        if now - self.last_report >= self.every_s:
            self.last_report = now
            self._say(self.status(now - self.started))

    def estimate_s(self, elapsed: float) -> float | None:
        """The whole build's expected duration, seen at `elapsed` seconds."""
        if not self.expected:
            return None
        done = self.steps / self.expected.steps
        if done < RATE_FROM:
            return max(float(self.expected.seconds), elapsed)
        return elapsed / min(done, 1.0) if done < 1.0 else elapsed

    def status(self, elapsed: float) -> str:
        total = self.estimate_s(elapsed)
        if total is None or not self.expected:
            return f"{self.steps} steps ({self.compiled} files compiled), {elapsed:.0f} s"
        self.last_estimate_s = round(total, 1)
        if self.steps >= self.expected.steps:
            return (f"{self.steps} steps, past the {self.expected.steps} expected, {elapsed:.0f} s "
                    "(linking or more to build than expected)")
        return (f"{self.steps}/{self.expected.steps} steps ({100 * self.steps / self.expected.steps:.0f}%), "
                f"{elapsed:.0f} s, about {max(total - elapsed, 0):.0f} s left")

    def done(self) -> None:
        elapsed = self.clock() - self.started
        estimated = f" (estimated {self.last_estimate_s:.0f} s)" if self.last_estimate_s is not None else ""
        self._say(f"done in {elapsed:.0f} s, {self.steps} steps{estimated}")

    def _say(self, text: str) -> None:
        print(f"  {self.what}: {text}", file=self.out or sys.stderr, flush=True)


def config_key(tree: KernelTree, config_text: str) -> str:
    """The key of a final .config of a tree: what names its build directory.

    A Debian or patched tree by its identity (its files never change); a user's tree by its path, not its
    commit: an edit (git:SHA becomes git:SHA-dirty) or a new commit then rebuilds the same directory
    incrementally, where a key by commit would start a new directory and rebuild every file."""
    return content_key(tree.identity if tree.immutable else f"path:{tree.path}", config_text)


def content_key(*parts: str | bytes) -> str:
    """A short stable hash of the parts (each delimited, so that (ab, c) and (a, bc) differ)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
