"""The `config` use cases: compose a kernel .config (make), say why a symbol has its value (explain), compare
two (diff)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.kernel import composition, kconfig, kconfig_explain, sandbox, trees
from harness.kernel.arch import HOST, load_arch
from harness.kernel.kconfig import ConfigError


@dataclass(frozen=True)
class ConfigMakeRequest:
    output: Path
    kernel_src: str | None = None
    base: str = "tinyconfig"
    fragments: tuple[Path, ...] = ()
    settings: tuple[str, ...] = ()  # SYM=V
    on: tuple[str, ...] = ()
    off: tuple[str, ...] = ()
    arch: str = HOST


@dataclass(frozen=True)
class ConfigMakeResult:
    output: Path
    requests: int  # how many requested values hold in the written .config


def config_make(req: ConfigMakeRequest) -> ConfigMakeResult:
    """Compose, then write the .config only if every request holds; the report says what moved and why."""
    requests = [r for frag in req.fragments for r in kconfig.parse_fragment(frag)]
    requests += [kconfig.parse_setting(text) for text in req.settings]
    tree = trees.resolve(req.kernel_src)
    version = kconfig.tree_version(tree.path)
    # an untrusted tree's (patched:KEY) `$(shell,...)` run in its jail (harness/kernel/sandbox.py)
    kconf = kconfig.load_tree(tree.path, version, sandbox.for_tree(tree), load_arch(req.arch))
    result = composition.compose(kconf, req.base, requests, off=list(req.off), on=list(req.on))
    lines = [f"kernel {kconf.srctree} ({version}), base {req.base}, "
             f"{len(req.fragments)} fragment(s), {len(req.settings)} --set"]
    for step in result.steps:
        lines.append(f"{step.request.origin} {step.request.symbol}:")
        if not step.changes:
            lines.append(f"  nothing to do: CONFIG_{step.request.symbol} is already {step.request.value}")
        lines += [f"  {change}" for change in step.changes]
        if step.also_moved:
            lines.append(f"  {len(step.also_moved)} more symbol(s) moved with these: {_short_list(step.also_moved)}")
    if result.overridden:
        lines.append("fragment/--set requests overridden by --on/--off:")
        lines += [f"  {r.origin}: CONFIG_{r.symbol}={r.value}" for r in result.overridden]
    if result.skipped:
        lines.append("not in this tree, so already not set: "
                     + ", ".join(f"CONFIG_{r.symbol} ({r.origin})" for r in result.skipped))
    # What the engine changed and why, on stdout as progress: before the write, which may refuse
    print("\n".join(lines), flush=True)
    try:
        kconfig.write_verified(kconf, req.output, result.requests)
    except OSError as e:
        raise ConfigError(f"cannot write {req.output}: {e.strerror}") from None
    return ConfigMakeResult(req.output, len(result.requests))


@dataclass(frozen=True)
class ConfigExplainRequest:
    symbol: str
    kernel_src: str | None = None
    config: Path | None = None  # the .config to explain (default: the tree's defaults)
    arch: str = HOST


def config_explain(req: ConfigExplainRequest) -> str:
    """Why SYM has its value in the .config (or in the tree's defaults)."""
    tree = trees.resolve(req.kernel_src)
    kconf = kconfig.load_tree(tree.path, None, sandbox.for_tree(tree), load_arch(req.arch))
    if req.config is not None:
        kconfig.apply_base(kconf, str(req.config))
    return str(kconfig_explain.explain(kconf, req.symbol))


@dataclass(frozen=True)
class ConfigDiffRequest:
    a: Path
    b: Path


def config_diff(req: ConfigDiffRequest) -> str:
    """The symbols whose values differ between A and B."""
    return str(kconfig_explain.render_diff(kconfig_explain.diff_configs(req.a, req.b), str(req.a), str(req.b)))


def _short_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
