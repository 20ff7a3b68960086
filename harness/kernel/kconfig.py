"""Kernel configuration through kconfiglib: a tree's symbols, the values asked of them, and proof they stuck.

kconfiglib 14.1.0 (its last release, 2020) trails the Kconfig language. `KernelKconfig` teaches it what
Linux added since, each as the kernel's own scripts/kconfig defines it: the bare `modules` attribute (5.13),
`transitional` symbols and conditional dependencies (`depends on X if Y`, both 6.18). Everything else is
kconfiglib's own evaluation of the real Kconfig tree, and tests/test_config_differential.py proves it
against each tree's own `olddefconfig`, symbol by symbol. A construct it still does not know raises
`Unmodelled`, naming the file and line; the config stage then builds through the kernel's own tools.

In order: the tree (load_tree, tree_version, check_tree), fragments and requests (parse_fragment,
apply_base, apply_requests), verification (verify, write_config, write_verified), and explain() /
diff_configs() for people. The engine behind --off/--on, and compose() which applies a base, requests
and the engine in order, is resolver.py; it builds on this module, never the other way round.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kconfiglib

from harness.errors import UserError
from harness.kernel import sandbox
from harness.kernel.arch import Arch, load_arch


class ConfigError(UserError):
    """A configuration request that cannot be honoured; the message says why."""


_kconfiglib_str_value = kconfiglib.Symbol.str_value


def _str_value(sym: kconfiglib.Symbol) -> str:
    """An int or hex symbol that nothing gives a value starts at "0" / "0x0" in the C tools
    (scripts/kconfig/symbol.c:sym_calc_value); kconfiglib has "". It matters in comparisons: 7.x's
    `default 10 if ARCH_FORCE_MAX_ORDER = 0` holds on x86 (PAGE_BLOCK_MAX_ORDER=10, not 1)."""
    value: str = _kconfiglib_str_value.fget(sym)
    if not value and sym.orig_type in (kconfiglib.INT, kconfiglib.HEX) and sym.nodes:
        return "0" if sym.orig_type is kconfiglib.INT else "0x0"
    return value


kconfiglib.Symbol.str_value = property(_str_value, doc=_kconfiglib_str_value.__doc__)


class Unmodelled(ConfigError):
    """The tree uses a Kconfig construct the engine cannot model yet (the message names file and line)."""


class KernelKconfig(kconfiglib.Kconfig):
    """kconfiglib.Kconfig that also parses what Linux added to the language after kconfiglib 14.1.0."""

    arch: Arch | None = None  # what load_tree() parsed it for

    def __init__(self, filename: str) -> None:
        self._transitional_lines: list[tuple[str, int]] = []
        super().__init__(filename, warn=False)
        self.transitional = self._find_transitional()
        for name in self.transitional:
            # Visible to a .config (symbol.c:sym_calc_visibility gives it yes), so an old .config's value
            # is read and used, as the C tools do; the kernel's olddefconfig then leaves it out.
            self.syms[name].nodes[0].prompt = ("(transitional)", self.y)

    def _tokenize(self, s):  # kconfiglib's private hook
        if s.strip() == "transitional":
            # A symbol kept only to migrate old configs (scripts/kconfig/symbol.c: SYMBOL_TRANS): the C
            # tools read its user value and never write it. Its other lines parse as a promptless bool.
            self._transitional_lines.append((self.filename, self.linenr))
            return (None,)
        tokens = super()._tokenize(s)
        if tokens and tokens[0] is kconfiglib._T_MODULES:
            # `modules` alone on a line means what `option modules` meant.
            return [kconfiglib._T_OPTION, *tokens]
        return tokens

    def _expect_expr_and_eol(self):  # kconfiglib's private hook, called for `depends on` among others
        expr = self._parse_expr(True)
        if self._tokens[0] is kconfiglib._T_DEPENDS and self._check_token(kconfiglib._T_IF):
            # `depends on X if Y` is X || (Y = n): scripts/kconfig/menu.c:menu_add_dep()
            expr = self._make_or(expr, self._compare_n(self._parse_expr(True)))
        if self._tokens[self._tokens_i] is not None:
            self._trailing_tokens_error()
        return expr

    def _compare_n(self, expr: object, equal: bool = True) -> object:
        """`expr = n` (or `!=` n), spelled as scripts/kconfig/expr.c:expr_trans_compare() spells it."""
        if expr.__class__ is not tuple:
            return (kconfiglib.EQUAL if equal else kconfiglib.UNEQUAL, expr, self.n)
        op = expr[0]
        if op in (kconfiglib.AND, kconfiglib.OR):
            # (A && B) = n is (A = n) || (B = n); (A || B) = n is (A = n) && (B = n)
            both = (kconfiglib.OR if op is kconfiglib.AND else kconfiglib.AND,
                    self._compare_n(expr[1]), self._compare_n(expr[2]))
            return both if equal else (kconfiglib.NOT, both)
        if op is kconfiglib.NOT:
            return self._compare_n(expr[1], not equal)
        return (kconfiglib.NOT, expr) if equal else expr  # a comparison: (A = B) = n is !(A = B)

    def _find_transitional(self) -> frozenset[str]:
        """The symbols whose definition holds a `transitional` line: the nearest definition above it."""
        found = set()
        for filename, line in self._transitional_lines:
            above = [(node.linenr, node.item) for node in self.node_iter() if node.filename == filename
                     and node.linenr < line and isinstance(node.item, kconfiglib.Symbol)]
            if above:
                found.add(max(above, key=lambda pair: pair[0])[1].name)
        return frozenset(found)


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
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    return parse_fragment_text(text, str(path))


def parse_setting(text: str) -> Request:
    """`SYM=value` from the command line (the CONFIG_ prefix is optional), read as a fragment's line is: a string
    in double quotes is its content (`--set LOCALVERSION="-x"` and `--set LOCALVERSION=-x` are the same)."""
    name, sep, value = text.partition("=")
    name = name.removeprefix("CONFIG_")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", name) or "\n" in value:
        raise ConfigError(f"--set expects SYM=value, got {text!r}")
    (request,) = parse_fragment_text(f"CONFIG_{name}={value}", "--set")
    return Request(name, request.value, "--set")


def read_config_values(path: Path) -> dict[str, str]:
    """Symbol -> value of a .config ("n" for "is not set"; absent symbols are not listed)."""
    values = {}
    for req in parse_fragment(path):
        values[req.symbol] = req.value
    return values


def kconfig_env(srctree: Path, kernelversion: str, jail: sandbox.Jail | None = None,
                arch: Arch | None = None) -> dict[str, str]:
    """The variables the top-level Makefile exports to scripts/kconfig and that Kconfig files expand.

    Shell macros in Kconfig run the tools these name (`$(success,... $(NM) ...)` decides
    TOOLS_SUPPORT_RELR; pahole's version decides what BTF allows), so each must be what Kbuild passes.
    The tree's own scripts/pahole-version.sh runs in `jail` (an untrusted tree's).
    """
    def first_line(cmd: list[str], jail: sandbox.Jail | None = None) -> str:
        try:
            out = (jail.run(cmd) if jail else subprocess.run(cmd, capture_output=True, text=True)).stdout
        except OSError:  # the tool is not installed: Kbuild's $(shell ...) gives "" too
            return ""
        return out.splitlines()[0].replace("#", "") if out.strip() else ""

    pahole_version = srctree / "scripts/pahole-version.sh"
    arch = arch or load_arch()
    cross = arch.cross_compile  # the target's binutils and gcc, as the top Makefile names them
    return {
        "srctree": str(srctree),
        "ARCH": arch.srcarch,
        "SRCARCH": arch.srcarch,
        "CC": f"{cross}gcc",
        "LD": f"{cross}ld",
        "AR": f"{cross}ar",
        "NM": f"{cross}nm",
        "OBJCOPY": f"{cross}objcopy",
        "HOSTCC": "gcc",
        "HOSTCXX": "g++",
        "KERNELVERSION": kernelversion,
        "CC_VERSION_TEXT": first_line([f"{cross}gcc", "--version"]),
        "RUSTC": "rustc",
        "RUSTC_VERSION_TEXT": first_line(["rustc", "--version"]),
        "BINDGEN": "bindgen",
        "PAHOLE": "pahole",
        "PAHOLE_VERSION": first_line([str(pahole_version), "pahole"], jail) if pahole_version.exists() else "",
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


def tree_version(srctree: Path) -> str:
    """`make kernelversion` without make: VERSION.PATCHLEVEL.SUBLEVEL plus EXTRAVERSION from the Makefile."""
    check_tree(srctree)
    text = (srctree / "Makefile").read_text(errors="replace")
    fields = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        m = re.search(rf"^{key}\s*=[ \t]*(\S*)", text, re.MULTILINE)
        fields[key] = m[1] if m else ""
    if not fields["VERSION"].isdigit() or not fields["PATCHLEVEL"].isdigit():
        raise ConfigError(f"{srctree} is not a Linux kernel source tree: its Makefile has no numeric VERSION and "
                          "PATCHLEVEL lines. Point --kernel-src at the top directory of an unpacked kernel source.")
    sublevel = fields["SUBLEVEL"] or "0"
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{sublevel}{fields['EXTRAVERSION']}"


def check_tree(srctree: Path, arch: Arch | None = None) -> None:
    """A ConfigError unless srctree looks like the top of a kernel source tree (Kconfig and a versioned Makefile)
    with the architecture's arch/ directory."""
    if not srctree.exists():
        raise ConfigError(f"kernel source tree {srctree} does not exist. Unpack one there (for example "
                          "`tar xf /usr/src/linux-source-6.12.tar.xz`) or point --kernel-src at an existing tree.")
    if not srctree.is_dir():
        raise ConfigError(f"kernel source tree {srctree} is not a directory.")
    missing = [name for name in ("Kconfig", "Makefile") if not (srctree / name).is_file()]
    if missing:
        raise ConfigError(f"{srctree} is not a Linux kernel source tree: it has no {', '.join(missing)}. "
                          "Point --kernel-src at the top directory of an unpacked kernel source.")
    arch = arch or load_arch()
    if not (srctree / f"arch/{arch.srcarch}/Kconfig").is_file():
        arches = sorted(p.parent.name for p in srctree.glob("arch/*/Kconfig"))
        raise ConfigError(f"{srctree} has no arch/{arch.srcarch} (it has: {', '.join(arches) or 'no arch/ at all'}): "
                          f"it cannot be built for {arch.name}.")


def load_tree(srctree: Path, kernelversion: str | None = None, jail: sandbox.Jail | None = None,
              arch: Arch | None = None) -> kconfiglib.Kconfig:
    """Parse the tree's Kconfig for `arch` (x86-64: about 2 s for 6.12); the version defaults to the Makefile's.
    The commands its `$(shell,...)` macros run, run in `jail` (an untrusted tree's: harness/kernel/sandbox.py)."""
    srctree = Path(srctree).resolve()
    arch = arch or load_arch()
    if kernelversion is None:
        kernelversion = tree_version(srctree)
    check_tree(srctree, arch)
    with sandbox.kconfig_shell(jail) as shell_env, \
            _in_tree(srctree, {**kconfig_env(srctree, kernelversion, jail, arch), **shell_env}):
        try:
            kconf = KernelKconfig("Kconfig")
            kconf.arch = arch
            return kconf
        except kconfiglib.KconfigError as e:
            where = str(e).strip().splitlines()[0]
            raise Unmodelled(f"the config engine cannot model {srctree}: {where}") from None


def tri_value(sym: kconfiglib.Symbol) -> str:
    """The symbol's value as it is written in a .config ("n" for an unset bool/tristate)."""
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return kconfiglib.TRI_TO_STR[sym.tri_value]
    return sym.str_value


def tiny_fragments(srctree: Path, arch: Arch | None = None) -> list[Path]:
    """What `make tinyconfig` merges over allnoconfig (scripts/kconfig/Makefile), those this tree has."""
    arch = arch or load_arch()
    names = ("kernel/configs/tiny-base.config", "kernel/configs/tiny.config", *([arch.tiny] if arch.tiny else []))
    return [srctree / name for name in names if (srctree / name).exists()]


def arch_of(kconf: kconfiglib.Kconfig) -> Arch:
    return getattr(kconf, "arch", None) or load_arch()


def apply_base(kconf: kconfiglib.Kconfig, base: str) -> None:
    """Start from `tinyconfig`, `allnoconfig`, `defconfig`, or a path to a .config."""
    srctree = Path(kconf.srctree)
    kconf.warn = False
    kconf.unset_values()  # the same Kconfig object may be reused for another composition
    if base in ("allnoconfig", "tinyconfig"):
        for sym in kconf.unique_defined_syms:
            sym.set_value(2 if sym.is_allnoconfig_y else 0)
        if base == "tinyconfig":
            for frag in tiny_fragments(srctree, arch_of(kconf)):
                kconf.load_config(str(frag), replace=False)
    elif base == "defconfig":
        kconf.load_config(str(srctree / arch_of(kconf).defconfig))
    else:
        path = Path(base)
        if not path.is_file():
            raise ConfigError(f"base config {base!r} is neither tinyconfig/allnoconfig/defconfig nor a file")
        kconf.load_config(str(path.resolve()))


def apply_requests(kconf: kconfiglib.Kconfig, requests: Iterable[Request]) -> list[Request]:
    """Set each request's user value; returns the "not set" requests for symbols this tree lacks.

    Those are skipped rather than refused: a fragment shared by several kernel versions may turn off
    a symbol that an older tree never had (CONFIG_SLUB_TINY is new in 6.2), and absent means n.
    """
    skipped = []
    for req in requests:
        sym = kconf.syms.get(req.symbol)
        if (sym is None or not sym.nodes) and req.value == "n":
            skipped.append(req)
            continue
        sym = lookup(kconf, req.symbol, req.origin)
        if not sym.set_value(req.value):
            raise ConfigError(f"{req.origin}: {req.value!r} is not a valid value for CONFIG_{req.symbol} "
                              f"({kconfiglib.TYPE_TO_STR[sym.orig_type]})")
    return skipped


def lookup(kconf: kconfiglib.Kconfig, name: str, origin: str = "") -> kconfiglib.Symbol:
    """The symbol called `name` (CONFIG_ prefix optional), or a ConfigError that suggests near names."""
    name = name.removeprefix("CONFIG_")
    sym = kconf.syms.get(name)
    if sym is not None and sym.nodes:
        return sym
    defined = [s.name for s in kconf.unique_defined_syms]
    close = difflib.get_close_matches(name, defined, n=3)
    hint = f" Did you mean {', '.join('CONFIG_' + c for c in close)}?" if close else ""
    where = f"{origin}: " if origin else ""
    raise ConfigError(f"{where}unknown Kconfig symbol CONFIG_{name}: it is not defined anywhere in "
                      f"{kconf.srctree} for {arch_of(kconf).srcarch}.{hint}")


def explain_unmet(kconf: kconfiglib.Kconfig, sym: kconfiglib.Symbol) -> str:
    """Why a symbol is where it is: its dependencies and selectors with their values."""
    parts = []
    if sym.direct_dep is not kconf.y:
        parts.append(f"depends on {kconfiglib.expr_str(sym.direct_dep, symbol_with_value)}")
    if not any(node.prompt for node in sym.nodes):
        parts.append("has no prompt (it can only be selected)")
    if sym.rev_dep is not kconf.n:
        parts.append(f"selected by {kconfiglib.expr_str(sym.rev_dep, symbol_with_value)}")
    return "; ".join(parts) or "no dependency explains it"


def symbol_with_value(sc: kconfiglib.Symbol | kconfiglib.Choice) -> str:
    """`NAME[=value]` for expr_str(), or the bare name of a literal or a symbol the architecture lacks."""
    if isinstance(sc, kconfiglib.Symbol) and (sc.is_constant or not sc.nodes):
        return sc.name  # a literal, or a symbol this architecture does not define
    return f"{sc.name}[={tri_value(sc) if isinstance(sc, kconfiglib.Symbol) else sc.str_value}]"


def verify(kconf: kconfiglib.Kconfig | str, final_config: Path, requests: Iterable[Request],
           shown_as: Path | None = None) -> None:
    """Every request must hold in the final .config; the error names what blocked each one that did not.

    `kconf` is the tree's model, or (for a tree the engine cannot model) why no dependency can be named.
    """
    final = read_config_values(final_config)
    problems = []
    for req in requests:
        got = final.get(req.symbol, "n")
        if same_value(req.value, got):
            continue
        why = "" if isinstance(kconf, str) else f": {explain_unmet(kconf, kconf.syms[req.symbol])}"
        problems.append(f"  CONFIG_{req.symbol}: asked {req.value!r} ({req.origin}), got {got!r}{why}")
    if problems:
        unexplained = f" ({kconf})" if isinstance(kconf, str) else ""
        raise ConfigError(f"{len(problems)} requested option(s) did not stick in {shown_as or final_config}"
                          f"{unexplained}:\n" + "\n".join(problems))


def same_value(asked: str, got: str) -> bool:
    """Whether a .config value satisfies a request (0x10 and 16 are the same number)."""
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


def write_verified(kconf: kconfiglib.Kconfig, path: Path, requests: Iterable[Request]) -> None:
    """Write the .config only if every request holds in what kconfiglib writes; never leave a failed one behind."""
    tmp = path.with_name(path.name + ".tmp")
    kconf.write_config(str(tmp), save_old=False)
    try:
        verify(kconf, tmp, requests, shown_as=path)
    except ConfigError:
        tmp.unlink()
        raise
    tmp.replace(path)


# Shared with the --off/--on engine (resolver.py).

BOOL_TRI = (kconfiglib.BOOL, kconfiglib.TRISTATE)  # the types the engine can turn on and off


def value_snapshot(kconf: kconfiglib.Kconfig) -> dict[str, str]:
    """Every defined symbol's current value, to count or list what a change moved."""
    return {sym.name: sym.str_value for sym in kconf.unique_defined_syms}


def default_in_effect(sym: kconfiglib.Symbol) -> tuple | None:
    """`(default && condition)` of the first default whose condition holds, as kconfiglib picks it."""
    for default, cond in sym.defaults:
        if kconfiglib.expr_value(cond):
            return (kconfiglib.AND, default, cond)
    return None
