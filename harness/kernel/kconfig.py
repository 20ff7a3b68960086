"""Kernel configuration through kconfiglib: compose a base with fragments, then prove it stuck.

kconfiglib 14.1.0 (its last release) predates Linux 5.13's bare `modules` attribute; `KernelKconfig`
teaches it that one keyword. Everything else is kconfiglib's own evaluation of the real Kconfig tree.

In order: the tree (load_tree, tree_version), fragments and requests (parse_fragment, apply_base,
apply_requests), verification (verify, write_verified), the engine behind --off/--on (turn_off,
turn_on: selectors, defaults and dependencies searched for the smallest change, each change with its
reason), compose() tying them together, and explain() / diff_configs() for people.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kconfiglib


class ConfigError(Exception):
    """A configuration request that cannot be honoured; the message says why."""


class KernelKconfig(kconfiglib.Kconfig):
    """kconfiglib.Kconfig that also parses Linux >= 5.13 (`modules` as a bare attribute)."""

    def _tokenize(self, s):  # kconfiglib's private hook
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
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
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


def check_tree(srctree: Path) -> None:
    """A ConfigError unless srctree looks like the top of a kernel source tree (Kconfig and a versioned Makefile)."""
    if not srctree.exists():
        raise ConfigError(f"kernel source tree {srctree} does not exist. Unpack one there (for example "
                          "`tar xf /usr/src/linux-source-6.12.tar.xz`) or point --kernel-src at an existing tree.")
    if not srctree.is_dir():
        raise ConfigError(f"kernel source tree {srctree} is not a directory.")
    missing = [name for name in ("Kconfig", "Makefile") if not (srctree / name).is_file()]
    if missing:
        raise ConfigError(f"{srctree} is not a Linux kernel source tree: it has no {', '.join(missing)}. "
                          "Point --kernel-src at the top directory of an unpacked kernel source.")
    if not (srctree / "arch/x86/Kconfig").is_file():
        arches = sorted(p.parent.name for p in srctree.glob("arch/*/Kconfig"))
        raise ConfigError(f"{srctree} has no arch/x86 (it has: {', '.join(arches) or 'no arch/ at all'}): "
                          "the harness builds and boots x86_64 kernels only.")


def load_tree(srctree: Path, kernelversion: str | None = None) -> kconfiglib.Kconfig:
    """Parse the tree's x86 Kconfig (about 2 s for 6.12); the version defaults to the Makefile's."""
    srctree = Path(srctree).resolve()
    if kernelversion is None:
        kernelversion = tree_version(srctree)
    else:
        check_tree(srctree)
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
    kconf.unset_values()  # the same Kconfig object may be reused for another composition
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
                      f"{kconf.srctree} for x86.{hint}")


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


def verify(kconf: kconfiglib.Kconfig, final_config: Path, requests: Iterable[Request],
           shown_as: Path | None = None) -> None:
    """Every request must hold in the final .config; the error names what blocked each one that did not."""
    final = read_config_values(final_config)
    problems = []
    for req in requests:
        got = final.get(req.symbol, "n")
        if same_value(req.value, got):
            continue
        sym = kconf.syms[req.symbol]
        problems.append(
            f"  CONFIG_{req.symbol}: asked {req.value!r} ({req.origin}), got {got!r}: {explain_unmet(kconf, sym)}"
        )
    if problems:
        raise ConfigError(f"{len(problems)} requested option(s) did not stick in {shown_as or final_config}:\n"
                          + "\n".join(problems))


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


# The engine behind --off and --on. It reaches a value by changing only what a user can set (prompted
# symbols), searches selectors, defaults and dependencies for the way that changes the fewest symbols,
# and records for every change why it was needed.

_BOOL_TRI = (kconfiglib.BOOL, kconfiglib.TRISTATE)
_AND, _OR, _NOT = kconfiglib.AND, kconfiglib.OR, kconfiglib.NOT
_IMPOSSIBLE = 10_000  # an estimate (of symbols to set) at or past this means "cannot be done"


@dataclass(frozen=True)
class Change:
    """A symbol the engine moved: `direct` when it set the user value, otherwise the value followed."""

    symbol: str
    old: str
    new: str
    reason: str
    direct: bool = True

    def __str__(self) -> str:
        how = "set" if self.direct else "follows"
        return f"CONFIG_{self.symbol}: {self.old} -> {self.new} ({how}; {self.reason})"


def value_snapshot(kconf: kconfiglib.Kconfig) -> dict[str, str]:
    """Every defined symbol's current value, to count or list what a change moved."""
    return {sym.name: sym.str_value for sym in kconf.unique_defined_syms}


class _SearchExhausted(ConfigError):
    """Raised through every trial: the search is too large to finish, so no alternative is trustworthy."""


Way = tuple[str, Callable[[], None]]


class _Resolver:
    """Depth-first search over settable symbols; each trial is undone through a journal of user values."""

    max_depth = 16
    max_steps = 5_000

    def __init__(self, kconf: kconfiglib.Kconfig, goal: kconfiglib.Symbol) -> None:
        self.kconf = kconf
        self.goal = goal
        self.journal: list[tuple[kconfiglib.Symbol, int | str | None]] = []
        self.changes: list[Change] = []
        self.stack: list[str] = []
        self.steps = 0
        self.chosen = ""  # how the goal was reached, when there was a choice
        self.memo: dict[tuple[str, int], float] = {}  # estimates for the current values only

    # -- bookkeeping --------------------------------------------------------------------------------

    def set(self, sym: kconfiglib.Symbol, value: int) -> None:
        self.journal.append((sym, sym.user_value))
        sym.set_value(value)
        self.memo.clear()

    def mark(self) -> tuple[int, int]:
        return len(self.journal), len(self.changes)

    def rollback(self, mark: tuple[int, int]) -> None:
        journal_len, changes_len = mark
        while len(self.journal) > journal_len:
            sym, old = self.journal.pop()
            if old is None:
                sym.unset_value()
            else:
                sym.set_value(old)
        del self.changes[changes_len:]
        self.memo.clear()

    def because(self, relation: str, sym: kconfiglib.Symbol, why: str) -> str:
        """'selects KVM_GENERIC_MMU_NOTIFIER which selects MMU_NOTIFIER': the chain up to the goal."""
        head = relation.format(sym.name)
        return head if sym is self.goal else f"{head} which {why}"

    def enter(self, sym: kconfiglib.Symbol) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _SearchExhausted(f"gave up after {self.max_steps} steps: the dependencies of "
                                   f"CONFIG_{self.goal.name} are too tangled to search")
        if sym.name in self.stack:
            raise ConfigError(f"dependency loop through CONFIG_{sym.name}")
        if len(self.stack) >= self.max_depth:
            raise ConfigError(f"dependency chain deeper than {self.max_depth} at CONFIG_{sym.name}")
        if sym.choice:
            raise ConfigError(f"CONFIG_{sym.name} is a member of a choice; pick it with --set")
        self.stack.append(sym.name)

    def record(self, sym: kconfiglib.Symbol, old: str, why: str, mark: tuple[int, int]) -> None:
        direct = any(s is sym for s, _ in self.journal[mark[0]:])
        self.changes.append(Change(sym.name, old, tri_value(sym), why, direct))

    # -- off ----------------------------------------------------------------------------------------

    def off(self, sym: kconfiglib.Symbol, why: str) -> None:
        if sym.tri_value == 0:
            return
        self.enter(sym)
        old, mark = tri_value(sym), self.mark()
        try:
            # Each round removes the causes in effect; removing one may uncover another (a later default).
            for _ in range(8):
                before = len(self.journal)
                self.remove_causes(sym, why)
                if sym.tri_value == 0 or len(self.journal) == before:
                    break
        finally:
            self.stack.pop()
        if sym.tri_value:
            raise ConfigError(f"CONFIG_{sym.name} stays {tri_value(sym)}: {explain_unmet(self.kconf, sym)}")
        self.record(sym, old, why, mark)

    def remove_causes(self, sym: kconfiglib.Symbol, why: str) -> None:
        if sym.visibility and sym.user_value != 0:
            self.set(sym, 0)
        if kconfiglib.expr_value(sym.rev_dep):
            # A select beats everything: every active selector has to go.
            for term in kconfiglib.split_expr(sym.rev_dep, _OR):
                if kconfiglib.expr_value(term):
                    self.off(_selector(term), self.because("selects {}", sym, why))
            return
        if not sym.tri_value or (sym.visibility and sym.user_value is not None):
            return
        # No prompt in effect: the value comes from an imply or a default.
        if kconfiglib.expr_value(sym.weak_rev_dep) and kconfiglib.expr_value(sym.direct_dep):
            for term in kconfiglib.split_expr(sym.weak_rev_dep, _OR):
                if kconfiglib.expr_value(term):
                    self.off(_selector(term), self.because("implies {}", sym, why))
        if not sym.tri_value:
            return
        ways = []
        default = self.default_in_effect(sym)
        if default and self.estimate(default, 0) < _IMPOSSIBLE:
            ways.append(("by undoing its default", lambda: self.make(
                default, 0, self.because("is in the default of {}", sym, why))))
        hidden = self.hidden_prompt(sym)
        if hidden and self.estimate(hidden, 1) < _IMPOSSIBLE:
            # A prompt such as `bool "Enable the block layer" if EXPERT`: show it, then answer n.
            ways.append(("through its prompt", lambda: self.show_and_set(
                sym, 0, hidden, 1, self.because("shows the prompt of {}", sym, why))))
        if not ways:
            shown = kconfiglib.expr_str(default, _with_values) if default else "none"
            raise ConfigError(f"CONFIG_{sym.name} stays {tri_value(sym)}: it has no prompt a user can answer, and "
                              f"nothing settable can make its default ({shown}) n")
        self.least_moving(ways, lambda: True, f"turn off CONFIG_{sym.name}")

    @staticmethod
    def default_in_effect(sym: kconfiglib.Symbol) -> tuple | None:
        """`(default && condition)` of the first default whose condition holds, as kconfiglib picks it."""
        for default, cond in sym.defaults:
            if kconfiglib.expr_value(cond):
                return (_AND, default, cond)
        return None

    @staticmethod
    def hidden_prompt(sym: kconfiglib.Symbol) -> object | None:
        """The condition that would show sym's prompt, when it has one that is hidden now."""
        conds = [node.prompt[1] for node in sym.nodes if node.prompt]
        return _or_all(conds) if conds and not sym.visibility else None

    # -- on -----------------------------------------------------------------------------------------

    def on(self, sym: kconfiglib.Symbol, need: int, why: str) -> None:
        """Bring sym to at least `need` (1 = m, 2 = y)."""
        if sym.tri_value >= need:
            return
        self.enter(sym)
        old, mark = tri_value(sym), self.mark()
        try:
            ways = self.ways_on(sym, need, why)
            costs = [self.estimate(expr, want) + extra for _, _, expr, want, extra in ways]
            plain = [(label, way) for label, way, *_ in ways]
            done, what = lambda: sym.tri_value >= need, f"turn on CONFIG_{sym.name}"
            if sym is self.goal:
                # Compare the candidates for real, by all they drag in: DRM_XE is one setting that
                # selects MMU_NOTIFIER, but it brings a whole GPU driver along.
                feasible = [way for way, cost in zip(plain, costs, strict=True) if cost < _IMPOSSIBLE]
                label = self.least_moving(feasible, done, what) if feasible else \
                    self.first_that_works(plain, costs, done, what)
            else:
                label = self.first_that_works(plain, costs, done, what)
        finally:
            self.stack.pop()
        if sym is self.goal:
            self.chosen = label
        self.record(sym, old, why, mark)

    def ways_on(self, sym: kconfiglib.Symbol, need: int, why: str) -> list[tuple]:
        """(label, way, expression the way makes true, the value it needs, symbols set besides)."""
        ways = []
        conds = [node.prompt[1] for node in sym.nodes if node.prompt]
        if conds:
            # A bool that depends on an m symbol is still shown as y (kconfiglib promotes it).
            shown, shown_need = _or_all(conds), 1 if sym.orig_type is kconfiglib.BOOL else need
            ways.append(("through its prompt", lambda: self.show_and_set(
                sym, need, shown, shown_need, self.because("is needed by {}", sym, why)), shown, shown_need, 1))
        select_need = 1 if sym.orig_type is kconfiglib.BOOL else need  # a select by an m symbol gives a bool y
        if sym.rev_dep is not self.kconf.n:
            for term in kconfiglib.split_expr(sym.rev_dep, _OR):
                ways.append((f"selected by {_selector(term).name}",
                             lambda term=term: self.select(sym, term, select_need, why), term, select_need, 0))
        for default, cond in sym.defaults:
            if default is not self.kconf.n:
                d = (_AND, default, cond)
                ways.append((f"through its default {kconfiglib.expr_str(default)}",
                             lambda d=d: self.make(d, need, self.because("is in the default of {}", sym, why)),
                             d, need, 0))
        if sym.weak_rev_dep is not self.kconf.n:
            for term in kconfiglib.split_expr(sym.weak_rev_dep, _OR):
                t = (_AND, term, sym.direct_dep)
                ways.append((f"implied by {_selector(term).name}",
                             lambda t=t: self.make(t, need, self.because("implies {}", sym, why)), t, need, 0))
        return ways

    def show_and_set(self, sym: kconfiglib.Symbol, value: int, shown: object, shown_need: int, why: str) -> None:
        """Make the prompt shown (`why` is the reason for that), then answer it: n, or m/y for `value`."""
        self.make(shown, shown_need, why)
        self.set(sym, 0 if value == 0 else 1 if value == 1 and 1 in sym.assignable else 2)

    def select(self, sym: kconfiglib.Symbol, term: object, need: int, why: str) -> None:
        selector, *deps = kconfiglib.split_expr(term, _AND)
        selector_why = self.because("selects {}", sym, why)
        for dep in deps:  # the selector's own dependencies (and the select's `if`) first
            self.make(dep, need, self.because("is needed by {}", selector, selector_why))
        self.make(selector, need, selector_why)

    # -- expressions --------------------------------------------------------------------------------

    def make(self, expr: object, want: int, why: str) -> None:
        """Make expr evaluate to n (want 0) or to at least want."""
        if _holds(expr, want):
            return
        if expr.__class__ is not tuple:
            if not _settable(expr):
                raise ConfigError(f"{_sc_str(expr)} cannot change")
            if want == 0:
                self.off(expr, why)
            else:
                self.on(expr, want, why)
        elif expr[0] in (_AND, _OR):
            parts = kconfiglib.split_expr(expr, expr[0])
            if (expr[0] is _AND) == (want > 0):
                for part in parts:
                    self.make(part, want, why)
            else:  # any one part will do
                ways = [(kconfiglib.expr_str(p), lambda p=p: self.make(p, want, why)) for p in parts]
                what = f"make {kconfiglib.expr_str(expr)} {'n' if want == 0 else 'true'}"
                if want == 0:
                    ways = [way for way, p in zip(ways, parts, strict=True) if self.estimate(p, 0) < _IMPOSSIBLE]
                    if not ways:
                        raise ConfigError(f"{kconfiglib.expr_str(expr, _with_values)} cannot become n: "
                                          "nothing in it can be changed")
                    self.least_moving(ways, lambda: _holds(expr, want), what)
                else:
                    costs = [self.estimate(p, want) for p in parts]
                    self.first_that_works(ways, costs, lambda: _holds(expr, want), what)
        elif expr[0] is _NOT:
            self.make(expr[1], 0 if want else 2, why)
        elif (target := _compare_target(expr, want)) is not None:
            self.make(*target, why)
        else:
            raise ConfigError(f"{kconfiglib.expr_str(expr, _with_values)} cannot be changed automatically")
        if not _holds(expr, want):
            raise ConfigError(f"{kconfiglib.expr_str(expr, _with_values)} did not become "
                              f"{'n' if want == 0 else 'true'}")

    def least_moving(self, ways: list[Way], done: Callable[[], bool], what: str) -> str:
        """Try every way, undo each, then take the one that moves the fewest symbols in the whole config.

        Used to turn things off, where the few alternatives differ mostly in what else goes with them
        (turning off VIRTUALIZATION and turning off KVM are one setting each; one takes more along), and
        to pick the selector of an --on goal.
        """
        if len(ways) == 1:
            return self.first_that_works(ways, [0], done, what)
        base = value_snapshot(self.kconf)
        results, errors = [], []
        for i, (label, way) in enumerate(ways):
            mark = self.mark()
            try:
                way()
                if not done():
                    raise ConfigError("it did not take effect")
                moved = sum(1 for name, value in value_snapshot(self.kconf).items() if base.get(name) != value)
                results.append(((moved, len(self.journal) - mark[0]), i))
            except _SearchExhausted:
                raise
            except ConfigError as e:
                errors.append(f"{label}: {e}")
            self.rollback(mark)
        if not results:
            raise ConfigError(f"cannot {what}; " + "; ".join(errors))
        label, way = ways[min(results)[1]]
        way()
        return label

    def first_that_works(self, ways: list[Way], costs: list[float], done: Callable[[], bool], what: str) -> str:
        """Take the ways in order of estimated cost, keeping the first that works; returns its label.

        Used to turn things on, where chains are deep: comparing by trial at every level is exponential
        (MMU_NOTIFIER from tinyconfig did not finish in 15 minutes), an estimate is not.
        """
        errors = []
        for cost, i in sorted((cost, i) for i, cost in enumerate(costs)):
            label, way = ways[i]
            if cost >= _IMPOSSIBLE:
                errors.append(f"{label}: needs something that cannot change")
                continue
            mark = self.mark()
            try:
                way()
                if done():
                    return label
                raise ConfigError("it did not take effect")
            except _SearchExhausted:
                raise
            except ConfigError as e:
                errors.append(f"{label}: {e}")
                self.rollback(mark)
        raise ConfigError(f"cannot {what}; " + "; ".join(errors))

    # -- estimates ----------------------------------------------------------------------------------

    def estimate(self, expr: object, want: int) -> float:
        """About how many symbols must be set for expr to reach want (0 = n) from the current values.

        Shared dependencies are counted once per use, so it overestimates; it only has to rank ways.
        """
        if _holds(expr, want):
            return 0
        if expr.__class__ is not tuple:
            return self.estimate_sym(expr, want) if _settable(expr) else _IMPOSSIBLE
        if expr[0] in (_AND, _OR):
            costs = [self.estimate(part, want) for part in kconfiglib.split_expr(expr, expr[0])]
            return sum(costs) if (expr[0] is _AND) == (want > 0) else min(costs)
        if expr[0] is _NOT:
            return self.estimate(expr[1], 0 if want else 2)
        target = _compare_target(expr, want)
        return _IMPOSSIBLE if target is None else self.estimate(*target)

    def estimate_sym(self, sym: kconfiglib.Symbol, want: int) -> float:
        key = (sym.name, want)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = _IMPOSSIBLE  # a way that loops back here is no way
        if sym.choice:
            cost = _IMPOSSIBLE
        elif want:
            cost = min((self.estimate(expr, w) + extra for _, _, expr, w, extra in self.ways_on(sym, want, "")),
                       default=_IMPOSSIBLE)
        else:
            cost = 1 if sym.visibility else 0
            active = [t for t in kconfiglib.split_expr(sym.rev_dep, _OR) if kconfiglib.expr_value(t)]
            cost += sum(self.estimate(_selector(t), 0) for t in active)
            if not sym.visibility and not active:
                default, hidden = self.default_in_effect(sym), self.hidden_prompt(sym)
                cost += min(self.estimate(default, 0) if default else _IMPOSSIBLE,
                            self.estimate(hidden, 1) + 1 if hidden else _IMPOSSIBLE)
        self.memo[key] = min(cost, _IMPOSSIBLE)
        return self.memo[key]


def _compare_target(expr: tuple, want: int) -> tuple[kconfiglib.Symbol, int] | None:
    """`SYM = y`, `SYM != n` and the like as (SYM, value it must reach, 0 meaning n); None if not that shape."""
    if expr[0] not in (kconfiglib.EQUAL, kconfiglib.UNEQUAL):
        return None
    left, right = expr[1], expr[2]
    sym, const = (right, left) if _settable(right) else (left, right)
    if not _settable(sym) or not (const.is_constant and const.name in ("n", "m", "y")):
        return None
    target = kconfiglib.STR_TO_TRI[const.name]
    if (expr[0] is kconfiglib.EQUAL) == (want > 0):  # sym must equal the constant
        return sym, target
    return (sym, 1) if target == 0 else (sym, 0)


def _selector(term: object) -> kconfiglib.Symbol:
    """The selecting symbol of one reverse-dependency term `(SELECTOR && its conditions)`."""
    return kconfiglib.split_expr(term, _AND)[0]


def _holds(expr: object, want: int) -> bool:
    value = kconfiglib.expr_value(expr)
    return value == 0 if want == 0 else value >= want


def _settable(sc: object) -> bool:
    return (isinstance(sc, kconfiglib.Symbol) and not sc.is_constant and bool(sc.nodes)
            and sc.orig_type in _BOOL_TRI)


def _sc_str(sc: object) -> str:
    if isinstance(sc, kconfiglib.Symbol) and not sc.is_constant and not sc.nodes:
        return f"{sc.name} (not defined for x86)"
    return kconfiglib.expr_str(sc, _with_values)


def _or_all(exprs: list) -> object:
    result = exprs[0]
    for expr in exprs[1:]:
        result = (_OR, result, expr)
    return result


def _require_bool(sym: kconfiglib.Symbol, what: str) -> None:
    if sym.orig_type not in _BOOL_TRI:
        raise ConfigError(f"{what} CONFIG_{sym.name}: its type is {kconfiglib.TYPE_TO_STR[sym.orig_type]}, "
                          "not bool or tristate; give it a value with --set or a fragment instead")


def turn_off(kconf: kconfiglib.Kconfig, name: str) -> list[Change]:
    """Make a bool/tristate symbol n, also when it has no prompt and is only selected.

    Active selectors are turned off in turn (recursively through promptless ones and defaults). The
    changes come back in the order they were made, each with the chain of reasons up to `name`. On
    failure nothing is changed.
    """
    sym = lookup(kconf, name)
    _require_bool(sym, "cannot turn off")
    resolver = _Resolver(kconf, sym)
    try:
        resolver.off(sym, "requested off")
    except ConfigError as e:
        resolver.rollback((0, 0))
        raise ConfigError(f"cannot turn off CONFIG_{sym.name}: {e}") from None
    return resolver.changes


def turn_on(kconf: kconfiglib.Kconfig, name: str) -> list[Change]:
    """Make a bool/tristate symbol y.

    A prompted symbol is set when its dependencies allow it (otherwise the error names the unmet
    ones); a promptless one is reached through the selector (or default) whose dependencies can be
    met with the fewest symbols changed. On failure nothing is changed.
    """
    sym = lookup(kconf, name)
    _require_bool(sym, "cannot turn on")
    if sym.tri_value == 2:
        return []
    if any(node.prompt for node in sym.nodes):
        if sym.visibility < 2:  # kconfiglib already shows a bool that depends on m as y
            raise ConfigError(f"cannot turn on CONFIG_{sym.name}: {_unmet_text(kconf, sym)}")
        old, old_user = tri_value(sym), sym.user_value
        sym.set_value(2)
        if sym.tri_value != 2:
            if old_user is None:
                sym.unset_value()
            else:
                sym.set_value(old_user)
            raise ConfigError(f"cannot turn on CONFIG_{sym.name}: it stays {old}; {explain_unmet(kconf, sym)}")
        return [Change(sym.name, old, "y", "requested on")]
    resolver = _Resolver(kconf, sym)
    try:
        resolver.on(sym, 2, "requested on")
    except ConfigError as e:
        resolver.rollback((0, 0))
        raise ConfigError(f"cannot turn on CONFIG_{sym.name}, which has no prompt: {e}") from None
    changes = resolver.changes
    last = changes[-1]
    changes[-1] = Change(last.symbol, last.old, last.new, f"requested on, {resolver.chosen}", last.direct)
    return changes


def _unmet_text(kconf: kconfiglib.Kconfig, sym: kconfiglib.Symbol) -> str:
    """'it depends on A[=y] && B[=n], and B[=n] is not met': what keeps a prompt from offering y."""
    parts = kconfiglib.split_expr(sym.direct_dep, _AND)
    unmet = [kconfiglib.expr_str(part, _with_values) for part in parts if kconfiglib.expr_value(part) < 2]
    text = f"it depends on {kconfiglib.expr_str(sym.direct_dep, _with_values)}"
    if unmet:
        text += f", and {' and '.join(unmet)} {'is' if len(unmet) == 1 else 'are'} not met (not y)"
    else:
        text += ", and its prompt is hidden by a condition of its own"
    return text + ". Turn those on first (--on, --set or a fragment line)."


@dataclass(frozen=True)
class Step:
    """One --on/--off: the changes the engine made, and the other symbols that moved with them."""

    request: Request
    changes: list[Change]
    also_moved: list[str]


@dataclass
class Composition:
    """What compose() did, and the requests the final .config must show."""

    steps: list[Step]
    requests: list[Request]  # fragment/--set requests still in force, then one per --on/--off
    overridden: list[Request]  # fragment/--set requests on symbols that an --on/--off had to move
    skipped: list[Request]  # "not set" requests for symbols this tree does not define

    @property
    def changes(self) -> list[Change]:
        return [change for step in self.steps for change in step.changes]


def compose(kconf: kconfiglib.Kconfig, base: str, requests: Iterable[Request],
            off: Iterable[str] = (), on: Iterable[str] = ()) -> Composition:
    """Base, then fragments and --set (a later line wins), then --on, then --off (so an off always wins).

    A fragment request on a symbol that an --on/--off moved, directly or as a consequence, is
    overridden (and listed); every other request is verified.
    """
    requests = list(requests)
    apply_base(kconf, base)
    skipped = apply_requests(kconf, requests)
    steps = []
    for names, value, action in ((on, "y", turn_on), (off, "n", turn_off)):
        for name in names:
            before = value_snapshot(kconf)
            changes = action(kconf, name)
            after = value_snapshot(kconf)
            listed = {change.symbol for change in changes}
            moved = sorted(sym for sym, v in after.items() if before.get(sym) != v and sym not in listed)
            flag = "--on" if value == "y" else "--off"
            steps.append(Step(Request(lookup(kconf, name).name, value, flag), changes, moved))
    # What an --on/--off moved, directly or through dependencies, overrides the fragments: the axis
    # ("these fragments, notifier off") is the point, and each override is listed with its cause.
    moved_by_engine = {change.symbol for step in steps for change in step.changes}
    moved_by_engine |= {sym for step in steps for sym in step.also_moved}
    latest = {req.symbol: req for req in requests if req not in skipped}
    kept = [req for req in latest.values() if req.symbol not in moved_by_engine]
    overridden = [req for req in latest.values() if req.symbol in moved_by_engine]
    return Composition(steps, kept + [step.request for step in steps], overridden, skipped)


def explain(kconf: kconfiglib.Kconfig, name: str) -> str:
    """Why a symbol has its value: prompt, dependencies, selectors, implies and defaults, with values."""
    sym = lookup(kconf, name)
    value = tri_value(sym) if sym.orig_type in _BOOL_TRI else repr(sym.str_value)
    where = ", ".join(f"{node.filename}:{node.linenr}" for node in sym.nodes)
    lines = [f"CONFIG_{sym.name} ({kconfiglib.TYPE_TO_STR[sym.orig_type]}) = {value}    [{where}]"]
    prompts = [node.prompt[0] for node in sym.nodes if node.prompt]
    if prompts:
        shown = "shown" if sym.visibility else "hidden: its dependencies are not met"
        lines.append(f'  prompt: "{prompts[0]}" ({shown})')
    else:
        lines.append("  prompt: none, so only a select or a default can give it a value")
    deps = "nothing" if sym.direct_dep is kconf.y else kconfiglib.expr_str(sym.direct_dep, _with_values)
    lines.append(f"  depends on: {deps}")
    for label, expr in (("selected by", sym.rev_dep), ("implied by", sym.weak_rev_dep)):
        terms = kconfiglib.split_expr(expr, _OR) if expr is not kconf.n else []
        active = [_term_str(t) for t in terms if kconfiglib.expr_value(t)]
        inactive = [_term_str(t) for t in terms if not kconfiglib.expr_value(t)]
        if not terms:
            lines.append(f"  {label}: nothing")
        if active:
            lines.append(f"  {label} (active): {', '.join(active)}")
        if inactive:
            lines.append(f"  {label} (inactive): {', '.join(inactive)}")
    default = _Resolver.default_in_effect(sym)
    if default:
        value_expr, cond = default[1], default[2]
        text = kconfiglib.expr_str(value_expr, _with_values)
        if cond is not kconf.y:
            text += f" if {kconfiglib.expr_str(cond, _with_values)}"
        lines.append(f"  default in effect: {text}")
    else:
        lines.append(f"  default in effect: none ({len(sym.defaults)} defined)")
    lines.append(f"  value comes from: {_value_source(sym, default is not None)}")
    return "\n".join(lines)


def _term_str(term: object) -> str:
    """`SELECTOR[=y]`, plus its conditions when the selector is on but the select is not in effect."""
    selector, *conds = kconfiglib.split_expr(term, _AND)
    text = _with_values(selector)
    unmet = [kconfiglib.expr_str(c, _with_values) for c in conds if not kconfiglib.expr_value(c)]
    if kconfiglib.expr_value(selector) and unmet:
        text += f" (but {' && '.join(unmet)})"
    return text


def _value_source(sym: kconfiglib.Symbol, has_default: bool) -> str:
    if sym.orig_type in _BOOL_TRI and kconfiglib.expr_value(sym.rev_dep):
        return "a select (a select overrides the prompt and the defaults)"
    if sym.visibility and sym.user_value is not None:
        return "the configuration's own setting (the prompt is shown)"
    if has_default:
        return "the default in effect"
    if any(node.prompt for node in sym.nodes):
        return "nothing: the prompt is hidden and no default applies, so it is off"
    return "nothing sets it, so it is off" if sym.orig_type in _BOOL_TRI else "nothing sets it"


def diff_configs(a: Path, b: Path) -> list[tuple[str, str | None, str | None]]:
    """Symbols whose values differ between two .config files, as (symbol, value in a, value in b).

    None means absent; an absent symbol and "is not set" count as the same (both n).
    """
    values_a, values_b = read_config_values(a), read_config_values(b)
    rows = []
    for name in sorted(values_a.keys() | values_b.keys()):
        va, vb = values_a.get(name), values_b.get(name)
        if ("n" if va is None else va) != ("n" if vb is None else vb):
            rows.append((name, va, vb))
    return rows


def render_diff(rows: list[tuple[str, str | None, str | None]], a: str, b: str) -> str:
    if not rows:
        return f"{a} and {b} set the same values"
    width = max(len(name) for name, _, _ in rows) + len("CONFIG_")
    lines = [f"--- {a}", f"+++ {b}"]
    for name, va, vb in rows:
        lines.append(f"{'CONFIG_' + name:<{width}}  {_shown(va)} -> {_shown(vb)}")
    lines.append(f"{len(rows)} symbol(s) differ")
    return "\n".join(lines)


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else value
