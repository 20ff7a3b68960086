"""The config stage: what a kernel is asked to be, and the final .config that shows it is.

A ConfigSpec is the request: a base, fragments, --set lines and --on/--off symbols; config_spec() says
what the notifier axis and the project's fragments mean. configure() composes it with kconfiglib
(composition.compose), lets the kernel's own olddefconfig have the last word, verifies every request in
the result, and returns a Configured: the final .config, its content key (which names the build
directory) and the "why" text (every change the engine made, with its reason).

Everything lives under <cache>/configure: one scratch directory per tree (where scripts/kconfig/conf
is built once and olddefconfig runs), final configs kept by content key (by-key/), and for a Debian
tree, which never changes, the config each spec led to (by-spec/), so that a second run skips
kconfiglib (~5 s); for a user's tree too, until a Kconfig file (or the Makefile, scripts/kconfig, a
defconfig) of it is newer than that memo.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from harness import atomic, locks, paths
from harness.kernel import composition, kconfig, resolver, sandbox
from harness.kernel.arch import HOST, load_arch
from harness.kernel.build import Configured, config_key, content_key, make_cmd, run_logged
from harness.kernel.kconfig import ConfigError
from harness.kernel.source import KernelTree

NOTIFIER_AXIS = ("on", "off")
# The code that decides a final .config: a change to it must not reuse a remembered one.
ENGINE = (Path(kconfig.__file__), Path(resolver.__file__), Path(composition.__file__), Path(__file__))


@dataclass(frozen=True)
class ConfigSpec:
    """What a kernel is asked to be: a base plus fragments (paths) plus single settings."""

    base: str = "tinyconfig"
    fragments: tuple[Path, ...] = ()
    settings: tuple[str, ...] = ()  # SYM=value, as given with --set
    off: tuple[str, ...] = ()  # symbols the engine turns off, selectors and all (--off)
    on: tuple[str, ...] = ()  # symbols the engine turns on, through a selector if need be (--on)
    arch: str = HOST  # configs/arches/NAME.yaml

    def requests(self) -> list[kconfig.Request]:
        reqs = [r for frag in self.fragments for r in kconfig.parse_fragment(frag)]
        return reqs + [kconfig.parse_setting(s) for s in self.settings]


def fragment_path(name: str) -> Path:
    """An extra fragment: NAME is configs/fragments/NAME.config (e.g. debug/kasan); else a path."""
    frags = paths.CONFIGS / "fragments"
    for path in (frags / f"{name}.config", Path(name)):
        if path.is_file():
            return path
    known = sorted(str(p.relative_to(frags).with_suffix("")) for p in frags.glob("debug/*.config"))
    raise ConfigError(f"cannot read config file {name}: neither {frags}/{name}.config nor a file of that path "
                      f"(fragments made for this: {', '.join(known)})")


def config_spec(notifier: str, series: str = "", settings: tuple[str, ...] = (),
                extra: tuple[str, ...] = (), arch: str = HOST) -> ConfigSpec:
    """The same tree and fragments either way; "off" asks the engine to turn off every selector.

    The series fragments (series_fragments) add what a kernel series needs to give the same guest
    (e.g. 6.1's KVM depends on HIGH_RES_TIMERS), the architecture's fragment what its machine needs (arch/).
    `extra` fragments (a debug kernel: debug/kasan) come last, checked like the rest.
    """
    frags = paths.CONFIGS / "fragments"
    load_arch(arch)  # an unknown one is an error here, not a missing fragment
    common: tuple[Path, ...] = (frags / "base.config", frags / "drivers.config", frags / "arch" / f"{arch}.config",
                                *series_fragments(series))
    common += tuple(fragment_path(name) for name in extra)
    if notifier == "on":
        return ConfigSpec("tinyconfig", (*common, frags / "mmu-notifier-on.config"), settings, arch=arch)
    if notifier == "off":
        return ConfigSpec("tinyconfig", common, settings, off=("MMU_NOTIFIER",), arch=arch)
    raise ValueError(f"notifier must be one of {NOTIFIER_AXIS}, got {notifier!r}")


def series_fragments(series: str) -> tuple[Path, ...]:
    """configs/fragments/series/: X.Y.config applies to series X.Y alone, until-X.Y.config to every series
    before X.Y (a symbol that X.Y renamed or folded away, such as PROC_SYSCTL into SYSCTL in 7.3), and
    from-X.Y.config to X.Y and every series after it (a symbol that X.Y added, such as NUMA_MIGRATION)."""
    if not series:
        return ()
    found = []
    for path in sorted((paths.CONFIGS / "fragments" / "series").glob("*.config")):
        kind, _, bound = path.stem.rpartition("-")
        if ((not kind and bound == series) or (kind == "until" and _version(series) < _version(bound))
                or (kind == "from" and _version(series) >= _version(bound))):
            found.append(path)
    return tuple(found)


def _version(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))


def fragments_for(notifier: str, series: str = "", arch: str = HOST) -> tuple[Path, ...]:
    return config_spec(notifier, series, arch=arch).fragments


def configure(tree: KernelTree, spec: ConfigSpec) -> Configured:
    """The final .config of `tree` for `spec`, composed and verified (or remembered, for a Debian tree)."""
    root = paths.cache_root() / "configure"
    # A user's tree by its path (an edit makes its identity -dirty, and changes no Kconfig): remembered until
    # a file that the configuration reads is newer than the memo
    keyed = tree if tree.immutable else replace(tree, identity=f"path:{tree.path}")
    memo = root / "by-spec" / f"{spec_key(keyed, spec)}.json"
    if memo.exists() and (tree.immutable or not kconfig_changed_since(tree, memo)):
        known = json.loads(memo.read_text())
        kept = root / "by-key" / f"{tree.version}-{known['key']}.config"
        if kept.exists():
            return Configured(tree, kept, known["key"], known["why"])
    if tree.base is not None and not any(_configures(name) for name in tree.changed):
        # A series that touches nothing the configuration reads leaves the base's .config as it is: the base's
        # composition (remembered) is this tree's, under this tree's own key. Composing a patched copy
        # again took minutes on a loaded host (kconfiglib reading a tree it has never seen).
        based = configure(tree.base, spec)
        text = based.config.read_text()
        key = config_key(tree, text)
        kept = root / "by-key" / f"{tree.version}-{key}.config"
        if not kept.exists():
            atomic.write_text(kept, text)
        return Configured(tree, kept, key, based.why)
    if tree.imported:
        raise ConfigError(f"{tree.path} was imported from a build artifact (harness kernel --import) and holds only "
                          "the kernels packed with it; this configuration is not one of them. Import its artifact, "
                          f"or remove {tree.path} so that the full tree is unpacked")
    # compose() works in the tree's one scratch directory: one composition per tree at a time (seconds).
    with locks.locked(paths.cache_root() / "locks" / f"configure-{content_key(tree.identity, str(tree.path))}.lock",
                       f"composing a .config for {tree.version} ({tree.identity})", log=root / "configure.log"):
        scratch_config, key, why = compose(tree, spec, root / "configure.log")
        kept = root / "by-key" / f"{tree.version}-{key}.config"
        atomic.write_text(kept, scratch_config.read_text())
    atomic.write_text(memo, json.dumps({"key": key, "why": why}))
    return Configured(tree, kept, key, why)


def _configures(name: str) -> bool:
    """A file (relative to the tree) that composing a .config reads: a Kconfig, the top Makefile (the
    version), anything under scripts/ (kconfig itself, the compiler probes Kconfig runs), a defconfig."""
    return (Path(name).name.startswith("Kconfig") or name == "Makefile" or name.startswith("scripts/")
            or "/configs/" in name)


def kconfig_changed_since(tree: KernelTree, memo: Path) -> bool:
    """A file of a user's tree that composing its .config reads (a Kconfig, the top Makefile with the
    version, scripts/kconfig, the defconfigs) is newer than `memo`: one walk of the tree, a fraction of
    a second, where composing again takes seconds (kconfiglib, olddefconfig)."""
    top = str(tree.path)
    newer = subprocess.run(["find", top, "-path", f"{top}/.git", "-prune", "-o", "-newer", str(memo), "(",
                            "-name", "Kconfig*", "-o", "-path", f"{top}/Makefile", "-o", "-path",
                            f"{top}/scripts/kconfig/*", "-o", "-path", f"{top}/arch/*/configs/*", ")", "-print",
                            "-quit"], capture_output=True, text=True)
    return newer.returncode != 0 or bool(newer.stdout.strip())


def compose(tree: KernelTree, spec: ConfigSpec, log: Path) -> tuple[Path, str, str]:
    """Write the final .config (after the kernel's own olddefconfig); return it, its content key and why.

    A tree the engine cannot model (a Kconfig construct newer than harness/kernel/kconfig.py knows) is
    composed by the kernel's own scripts/kconfig alone: it still builds, with every request checked,
    but nothing can explain a request that did not stick, and --off/--on cannot be computed.
    """
    # A per-tree (and architecture) directory where scripts/kconfig/conf is built once and olddefconfig runs.
    arch = load_arch(spec.arch)
    scratch = paths.cache_root() / "configure" / content_key(tree.identity, str(tree.path),
                                                            *([arch.name] if arch.name != HOST else []))
    scratch.mkdir(parents=True, exist_ok=True)
    jail = sandbox.for_tree(tree, writable=(scratch,))  # an untrusted tree's own tools and $(shell): sandbox.py
    arch.require_compiler()  # Kconfig asks the compiler what it supports ($(cc-option)), and olddefconfig too
    try:
        kconf = kconfig.load_tree(tree.path, tree.version, sandbox.for_tree(tree), arch)
    except kconfig.Unmodelled as e:
        if spec.off or spec.on:
            flags = " ".join([*(f"--off {s}" for s in spec.off), *(f"--on {s}" for s in spec.on)])
            raise kconfig.Unmodelled(f"{e}. {flags} needs that model (which symbols select which), so this "
                                     "configuration cannot be composed; without it the tree still builds "
                                     "through the kernel's own tools") from None
        print(f"harness: {e}; composing with the kernel's own scripts/kconfig instead", flush=True)
        return _compose_with_kernel_tools(tree, spec, scratch, log, str(e), jail)
    composed = composition.compose(kconf, spec.base, spec.requests(), off=spec.off, on=spec.on)
    kconfig.write_config(kconf, scratch / ".config")
    run_logged(make_cmd(tree, scratch, "olddefconfig", arch=arch), log, "olddefconfig", jail=jail)
    kconfig.verify(kconf, scratch / ".config", composed.requests)
    text = (scratch / ".config").read_text()
    return scratch / ".config", config_key(tree, text), describe_composition(spec, composed)


def _compose_with_kernel_tools(tree: KernelTree, spec: ConfigSpec, scratch: Path, log: Path,
                               unmodelled: str, jail: sandbox.Jail | None = None) -> tuple[Path, str, str]:
    """The engine's composition (kconfig.apply_base, the requests, olddefconfig) spelled with the kernel's
    own tools: tinyconfig or allnoconfig as `make allnoconfig` given every line through KCONFIG_ALLCONFIG
    (so a symbol that a request makes visible is n, as in the engine), any other base as the .config
    itself with the requests after it (a later line wins); then olddefconfig, and every request checked."""
    config = scratch / ".config"
    arch = load_arch(spec.arch)
    requests = spec.requests()
    lines = "".join(f"# CONFIG_{r.symbol} is not set\n" if r.value == "n" else f"CONFIG_{r.symbol}={_quoted(r.value)}\n"
                    for r in requests)
    if spec.base in ("tinyconfig", "allnoconfig"):
        tiny = kconfig.tiny_fragments(tree.path, arch) if spec.base == "tinyconfig" else []
        allconfig = scratch / "allconfig"
        atomic.write_text(allconfig, "".join(frag.read_text() for frag in tiny) + lines)
        # conf reads KCONFIG_ALLCONFIG from its environment (a make variable would not reach it)
        run_logged(make_cmd(tree, scratch, "allnoconfig", arch=arch), log, "allnoconfig",
                   env={"KCONFIG_ALLCONFIG": str(allconfig)}, jail=jail)
    else:
        base = tree.path / arch.defconfig if spec.base == "defconfig" else Path(spec.base)
        atomic.write_text(config, base.read_text() + lines)
    run_logged(make_cmd(tree, scratch, "olddefconfig", arch=arch), log, "olddefconfig", jail=jail)
    kconfig.verify(f"no dependency can be named: {unmodelled}", config, requests)
    why = "\n".join([f"base: {spec.base}", *(f"fragment: {f}" for f in spec.fragments),
                     *(f"--set {s}" for s in spec.settings), f"arch: {spec.arch}",
                     f"composed by the kernel's own scripts/kconfig: {unmodelled}"]) + "\n"
    return config, config_key(tree, config.read_text()), why


def _quoted(value: str) -> str:
    """A .config value as written: numbers, y/m and hex as they are, anything else a quoted string."""
    if value in ("y", "m") or value.lstrip("-").isdigit() or value.lower().startswith("0x"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe_composition(spec: ConfigSpec, composed: composition.Composition) -> str:
    """Why the .config is what it is: the inputs, and every change the engine made with its reason."""
    lines = [f"base: {spec.base}", *(f"fragment: {f}" for f in spec.fragments),
             *(f"--set {s}" for s in spec.settings), *(f"--on {s}" for s in spec.on),
             *(f"--off {s}" for s in spec.off), f"arch: {spec.arch}"]
    for step in composed.steps:
        lines.append(f"\n{step.request.origin} {step.request.symbol}:")
        lines += [f"  {change}" for change in step.changes]
        if step.also_moved:
            lines.append(f"  and {len(step.also_moved)} symbols that followed: {' '.join(step.also_moved)}")
    lines += [f"overridden: CONFIG_{r.symbol}={r.value} ({r.origin})" for r in composed.overridden]
    return "\n".join(lines) + "\n"


def spec_key(tree: KernelTree, spec: ConfigSpec) -> str:
    """Everything that decides the final .config of an immutable tree, including the engine's own code."""
    base = Path(spec.base)
    return content_key(tree.identity, str(tree.path), spec.arch, spec.base,
                       base.read_bytes() if base.is_file() else b"",
                       *(f.read_bytes() for f in spec.fragments), *spec.settings, "off", *spec.off, "on",
                       *spec.on, *(code.read_bytes() for code in ENGINE))
