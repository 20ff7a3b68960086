"""Kernel builds: compose the .config, prove it stuck, build out of tree with ccache, cache by content.

One build directory per (tree identity, final .config): a second run finds it finished and does
nothing; a later change to a user's tree rebuilds it incrementally. The stamp that marks a build
finished is written last, so an interrupted build is never taken for a good one.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, paths
from harness.kernel import kconfig
from harness.kernel.source import KernelTree

STAMP = ".harness-built.json"


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class ConfigSpec:
    """What a kernel is asked to be: a base plus fragments (paths) plus single settings."""

    base: str = "tinyconfig"
    fragments: tuple[Path, ...] = ()
    settings: tuple[str, ...] = ()  # SYM=value, as given with --set
    off: tuple[str, ...] = ()  # symbols the engine turns off, selectors and all (--off)
    on: tuple[str, ...] = ()  # symbols the engine turns on, through a selector if need be (--on)

    def requests(self) -> list[kconfig.Request]:
        reqs = [r for frag in self.fragments for r in kconfig.parse_fragment(frag)]
        return reqs + [kconfig.parse_setting(s) for s in self.settings]


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
    def bzimage(self) -> Path:
        return self.dir / "arch/x86/boot/bzImage"

    def config_values(self) -> dict[str, str]:
        return kconfig.read_config_values(self.config)

    def has(self, symbol: str) -> bool:
        return self.config_values().get(symbol, "n") in ("y", "m")


def ccache_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(paths.cache_root() / "ccache"))
    env.setdefault("CCACHE_MAXSIZE", "10G")
    return env


def ccache_counts() -> dict[str, int]:
    """Compilations ccache answered from its cache (hits) and had to run (misses), so far."""
    out = subprocess.run(["ccache", "--print-stats"], env=ccache_env(), capture_output=True, text=True).stdout
    stats = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
    return {"hits": hits, "misses": int(stats.get("cache_miss", 0))}


def make_cmd(tree: KernelTree, outdir: Path, *targets: str, jobs: int | None = None) -> list[str]:
    cmd = ["make", "-C", str(tree.path), f"O={outdir}", "ARCH=x86_64", "CC=ccache gcc", "HOSTCC=ccache gcc"]
    if jobs:
        cmd.append(f"-j{jobs}")
    return [*cmd, *targets]


def compose_config(tree: KernelTree, spec: ConfigSpec, log: Path) -> tuple[Path, str, kconfig.Composition]:
    """Write the final .config (after the kernel's own olddefconfig) and return it with its content key."""
    kconf = kconfig.load_tree(tree.path, tree.version)
    composition = kconfig.compose(kconf, spec.base, spec.requests(), off=spec.off, on=spec.on)
    # A per-tree directory where scripts/kconfig/conf is built once and olddefconfig runs.
    scratch = paths.cache_root() / "configure" / content_key(tree.identity, str(tree.path))
    scratch.mkdir(parents=True, exist_ok=True)
    kconfig.write_config(kconf, scratch / ".config")
    run_logged(make_cmd(tree, scratch, "olddefconfig"), log, "olddefconfig")
    kconfig.verify(kconf, scratch / ".config", composition.requests)
    text = (scratch / ".config").read_text()
    return scratch / ".config", content_key(tree.identity, text), composition


def describe_composition(spec: ConfigSpec, composition: kconfig.Composition) -> str:
    """Why the .config is what it is: the inputs, and every change the engine made with its reason."""
    lines = [f"base: {spec.base}", *(f"fragment: {f}" for f in spec.fragments),
             *(f"--set {s}" for s in spec.settings), *(f"--on {s}" for s in spec.on),
             *(f"--off {s}" for s in spec.off)]
    for step in composition.steps:
        lines.append(f"\n{step.request.origin} {step.request.symbol}:")
        lines += [f"  {change}" for change in step.changes]
        if step.also_moved:
            lines.append(f"  and {len(step.also_moved)} symbols that followed: {' '.join(step.also_moved)}")
    lines += [f"overridden: CONFIG_{r.symbol}={r.value} ({r.origin})" for r in composition.overridden]
    return "\n".join(lines) + "\n"


def spec_key(tree: KernelTree, spec: ConfigSpec) -> str:
    """Everything that decides the final .config of an immutable tree, including the engine's own code."""
    base = Path(spec.base)
    return content_key(tree.identity, str(tree.path), spec.base, base.read_bytes() if base.is_file() else b"",
                       *(f.read_bytes() for f in spec.fragments), *spec.settings, "off", *spec.off, "on",
                       *spec.on, Path(kconfig.__file__).read_bytes())


def build_kernel(tree: KernelTree, spec: ConfigSpec, jobs: int | None = None) -> KernelBuild:
    if (host := os.uname().machine) != "x86_64":
        raise BuildError(f"this host is {host}: the harness builds x86_64 kernels with the host's compiler "
                         "and boots them with qemu-system-x86_64; cross-building is not supported")
    builds = paths.cache_root() / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    # A Debian tree never changes: remember which build a spec led to and skip kconfig (~5 s) next time.
    memo = builds / "by-spec" / f"{spec_key(tree, spec)}.json"
    if tree.immutable and memo.exists():
        known = json.loads(memo.read_text())
        if (Path(known["dir"]) / STAMP).exists():
            return KernelBuild(tree, Path(known["dir"]), known["key"], known["release"])
    final_config, key, composition = compose_config(tree, spec, builds / "configure.log")
    outdir = builds / f"{tree.version}-{key}"
    stamp = outdir / STAMP
    outdir.mkdir(exist_ok=True)
    atomic.write_text(outdir / "harness-config-why.txt", describe_composition(spec, composition))
    if not (stamp.exists() and tree.immutable):
        _make_kernel(tree, outdir, final_config, key, jobs)
    build = KernelBuild(tree, outdir, key, json.loads(stamp.read_text())["release"])
    if tree.immutable:
        atomic.write_text(memo, json.dumps({"dir": str(outdir), "key": key, "release": build.release}))
    return build


def _make_kernel(tree: KernelTree, outdir: Path, config: Path, key: str, jobs: int | None) -> None:
    """make bzImage modules in outdir (incremental when it was built before); the stamp is written last."""
    shutil.copyfile(config, outdir / ".config")
    log = outdir / "build.log"
    print(f"building kernel {tree.version} ({tree.identity}) in {outdir}\n  log: {log}", flush=True)
    started, ccache_before = time.monotonic(), ccache_counts()
    run_logged(make_cmd(tree, outdir, "olddefconfig"), log, "olddefconfig")
    run_logged(make_cmd(tree, outdir, "bzImage", "modules", jobs=jobs or os.cpu_count() or 1), log,
               "kernel build", progress=True)
    release = subprocess.run(make_cmd(tree, outdir, "-s", "kernelrelease"), capture_output=True, text=True,
                             check=True).stdout.strip()
    atomic.write_text(outdir / STAMP, json.dumps({
        "release": release, "tree": str(tree.path), "identity": tree.identity, "key": key,
        "build_s": round(time.monotonic() - started, 1),
        "ccache": {k: v - ccache_before.get(k, 0) for k, v in ccache_counts().items()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2))


def build_probe_module(build: KernelBuild) -> Path:
    """guest/probe built against this kernel build, with the event names of this tree's enum."""
    if not build.has("MMU_NOTIFIER"):
        raise BuildError(f"CONFIG_MMU_NOTIFIER is not set in {build.config}: the probe module cannot exist there")
    (ko,) = build_guest_modules(build, "probe", {"mmu_probe_events.h": event_names_header(build.tree.path)})
    return ko


def build_guest_modules(build: KernelBuild, subdir: str, generated: dict[str, str] | None = None) -> list[Path]:
    """The out-of-tree modules of guest/SUBDIR (its Kbuild), built against this kernel; cached by sources."""
    src = paths.GUEST / subdir
    generated = generated or {}
    files = sorted(p for p in src.iterdir() if p.is_file())
    key = content_key(*(p.name.encode() + p.read_bytes() for p in files),
                      *(f"{name}\0{text}" for name, text in sorted(generated.items())))
    outdir = build.dir / "harness-guest-modules" / f"{subdir}-{key}"
    if not outdir.exists():
        with atomic.staged_dir(outdir) as tmp:
            for p in files:
                shutil.copy(p, tmp / p.name)
            for name, text in generated.items():
                (tmp / name).write_text(text)
            run_logged(["make", "-C", str(build.dir), f"M={tmp}", "CC=ccache gcc", "modules"],
                       build.dir / "guest-modules.log", f"guest/{subdir} modules")
    return sorted(outdir.glob("*.ko"))


def install_modules(build: KernelBuild) -> Path:
    """`make modules_install` into a staging tree (lib/modules/<release>/...) for the image."""
    dest = build.dir / "harness-modules"
    if (dest / "lib/modules" / build.release / "modules.dep").exists():
        return dest
    with atomic.staged_dir(dest) as tmp:
        run_logged(make_cmd(build.tree, build.dir, f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1",
                            "DEPMOD=/sbin/depmod", "modules_install"), build.dir / "build.log", "modules_install")
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
    names = parse_event_enum((srctree / "include/linux/mmu_notifier.h").read_text())
    rows = "\n".join(f'\t[{n}] = "{n.removeprefix("MMU_NOTIFY_")}",' for n in names)
    return ("/* Generated by the harness from this tree's include/linux/mmu_notifier.h. */\n"
            f"static const char *const mmu_probe_event_names[] = {{\n{rows}\n}};\n")


def run_logged(cmd: Sequence[str], log: Path, what: str, progress: bool = False) -> None:
    """Run a build step with its output appended to `log`; on failure show the tail and the log's path."""
    started = time.monotonic()
    compiled = 0
    last_report = started
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ccache_env())
        assert proc.stdout
        for line in proc.stdout:
            out.write(line)
            compiled += line.startswith("  CC")
            if progress and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"  {what}: {compiled} files compiled, {last_report - started:.0f} s", flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise BuildError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")
    if progress:
        print(f"  {what}: done in {time.monotonic() - started:.0f} s", file=sys.stdout, flush=True)


def content_key(*parts: str | bytes) -> str:
    """A short stable hash of the parts (each delimited, so that (ab, c) and (a, bc) differ)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
