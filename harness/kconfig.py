"""Kernel configuration through kconfiglib: compose a base with fragments, then prove it stuck.

kconfiglib 14.1.0 (its last release) predates Linux 5.13's bare `modules` attribute; `KernelKconfig`
teaches it that one keyword. Everything else is kconfiglib's own evaluation of the real Kconfig tree.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kconfiglib


class ConfigError(Exception):
    """A configuration request that cannot be honoured; the message says why."""


class KernelKconfig(kconfiglib.Kconfig):
    """kconfiglib.Kconfig that also parses Linux >= 5.13 (`modules` as a bare attribute)."""

    def _tokenize(self, s):  # noqa: ANN001, ANN202 - kconfiglib's private hook
        tokens = super()._tokenize(s)
        if tokens and tokens[0] is kconfiglib._T_MODULES:
            # `modules` alone on a line means what `option modules` meant.
            return [kconfiglib._T_OPTION, *tokens]
        return tokens


# A fragment line: CONFIG_FOO=y, CONFIG_FOO="str", CONFIG_FOO=0x10, or "# CONFIG_FOO is not set".
_SET_RE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One symbol value asked for, and where it was asked (fragment file:line, or the command line)."""

    symbol: str
    value: str
    origin: str


def parse_fragment_text(text: str, origin: str) -> list[Request]:
    requests = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if m := _UNSET_RE.match(line):
            requests.append(Request(m[1], "n", f"{origin}:{lineno}"))
        elif m := _SET_RE.match(line):
            value = m[2]
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise ConfigError(f"{origin}:{lineno}: unterminated string in {raw!r}")
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            requests.append(Request(m[1], value, f"{origin}:{lineno}"))
        elif line.startswith("#"):
            continue
        else:
            raise ConfigError(
                f"{origin}:{lineno}: not a Kconfig fragment line: {raw!r}\n"
                'Expected CONFIG_NAME=value, CONFIG_NAME="string", "# CONFIG_NAME is not set" or a comment.'
            )
    return requests


def parse_fragment(path: Path) -> list[Request]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config fragment {path}: {e.strerror}") from None
    return parse_fragment_text(text, str(path))


def parse_setting(text: str) -> Request:
    """`SYM=value` from the command line (the CONFIG_ prefix is optional)."""
    name, sep, value = text.partition("=")
    name = name.removeprefix("CONFIG_")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"--set expects SYM=value, got {text!r}")
    return Request(name, value, "--set")


def read_config_values(path: Path) -> dict[str, str]:
    """Symbol -> value of a .config ("n" for "is not set"; absent symbols are not listed)."""
    values = {}
    for req in parse_fragment(path):
        values[req.symbol] = req.value
    return values


def kconfig_env(srctree: Path, kernelversion: str) -> dict[str, str]:
    """The variables the top-level Kconfig and scripts/Kconfig.include expand."""
    cc_version = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout
    return {
        "srctree": str(srctree),
        "ARCH": "x86",
        "SRCARCH": "x86",
        "CC": "gcc",
        "LD": "ld",
        "HOSTCC": "gcc",
        "HOSTCXX": "g++",
        "KERNELVERSION": kernelversion,
        "CC_VERSION_TEXT": cc_version.splitlines()[0],
        "RUSTC": "rustc",
        "BINDGEN": "bindgen",
        "PAHOLE": "pahole",
    }


@contextmanager
def _in_tree(srctree: Path, env: Mapping[str, str]):
    """kconfiglib resolves `source` against the working directory and reads os.environ."""
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.environ.update(env)
    os.chdir(srctree)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def load_tree(srctree: Path, kernelversion: str) -> kconfiglib.Kconfig:
    """Parse the tree's x86 Kconfig (about 2 s for 6.12)."""
    with _in_tree(srctree, kconfig_env(srctree, kernelversion)):
        try:
            return KernelKconfig("Kconfig", warn=False)
        except kconfiglib.KconfigError as e:
            raise ConfigError(f"kconfiglib cannot parse {srctree}/Kconfig: {e}") from None


def tri_value(sym: kconfiglib.Symbol) -> str:
    """The symbol's value as it is written in a .config ("n" for an unset bool/tristate)."""
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return kconfiglib.TRI_TO_STR[sym.tri_value]
    return sym.str_value


def apply_base(kconf: kconfiglib.Kconfig, base: str) -> None:
    """Start from `tinyconfig`, `allnoconfig`, `defconfig`, or a path to a .config."""
    srctree = Path(kconf.srctree)
    kconf.warn = False
    if base in ("allnoconfig", "tinyconfig"):
        for sym in kconf.unique_defined_syms:
            sym.set_value(2 if sym.is_allnoconfig_y else 0)
        if base == "tinyconfig":  # what `make tinyconfig` merges (scripts/kconfig/Makefile)
            for frag in ("kernel/configs/tiny-base.config", "kernel/configs/tiny.config",
                         "arch/x86/configs/tiny.config"):
                if (srctree / frag).exists():
                    kconf.load_config(str(srctree / frag), replace=False)
    elif base == "defconfig":
        kconf.load_config(str(srctree / "arch/x86/configs/x86_64_defconfig"))
    else:
        path = Path(base)
        if not path.is_file():
            raise ConfigError(f"base config {base!r} is neither tinyconfig/allnoconfig/defconfig nor a file")
        kconf.load_config(str(path.resolve()))


def apply_requests(kconf: kconfiglib.Kconfig, requests: Iterable[Request]) -> None:
    for req in requests:
        sym = kconf.syms.get(req.symbol)
        if sym is None or not sym.nodes:
            raise ConfigError(
                f"{req.origin}: unknown Kconfig symbol CONFIG_{req.symbol} "
                f"(not defined anywhere in {kconf.srctree} for x86)"
            )
        if not sym.set_value(req.value):
            raise ConfigError(f"{req.origin}: {req.value!r} is not a valid value for CONFIG_{req.symbol} "
                              f"({kconfiglib.TYPE_TO_STR[sym.orig_type]})")


def explain_unmet(kconf: kconfiglib.Kconfig, sym: kconfiglib.Symbol) -> str:
    """Why a symbol is where it is: its dependencies and selectors with their values."""
    parts = []
    if sym.direct_dep is not kconf.y:
        parts.append(f"depends on {kconfiglib.expr_str(sym.direct_dep, _with_values)}")
    if not any(node.prompt for node in sym.nodes):
        parts.append("has no prompt (it can only be selected)")
    if sym.rev_dep is not kconf.n:
        parts.append(f"selected by {kconfiglib.expr_str(sym.rev_dep, _with_values)}")
    return "; ".join(parts) or "no dependency explains it"


def _with_values(sc: kconfiglib.Symbol | kconfiglib.Choice) -> str:
    if isinstance(sc, kconfiglib.Symbol) and (sc.is_constant or not sc.nodes):
        return sc.name  # a literal, or a symbol this architecture does not define
    return f"{sc.name}[={tri_value(sc) if isinstance(sc, kconfiglib.Symbol) else sc.str_value}]"


def verify(kconf: kconfiglib.Kconfig, final_config: Path, requests: Iterable[Request]) -> None:
    """Every request must hold in the final .config; the error names what blocked each one that did not."""
    final = read_config_values(final_config)
    problems = []
    for req in requests:
        got = final.get(req.symbol, "n")
        if _same(req.value, got):
            continue
        sym = kconf.syms[req.symbol]
        problems.append(
            f"  CONFIG_{req.symbol}: asked {req.value!r} ({req.origin}), got {got!r}: {explain_unmet(kconf, sym)}"
        )
    if problems:
        raise ConfigError(f"{len(problems)} requested option(s) did not stick in {final_config}:\n"
                          + "\n".join(problems))


def _same(asked: str, got: str) -> bool:
    if asked == got:
        return True
    try:  # hex and decimal spellings of the same number
        return int(asked, 0) == int(got, 0)
    except ValueError:
        return False


def write_config(kconf: kconfiglib.Kconfig, path: Path) -> None:
    """Write atomically so that a crash never leaves a half-written .config that looks finished."""
    tmp = path.with_name(path.name + ".tmp")
    kconf.write_config(str(tmp), save_old=False)
    tmp.replace(path)
