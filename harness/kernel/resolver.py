"""The engine behind --off and --on (composition.py applies it after a base and the requests).

It reaches a value by changing only what a user can set (prompted symbols), searches selectors,
defaults and dependencies for the way that changes the fewest symbols, and records for every change
why it was needed. It works on a kconfiglib tree loaded by kconfig.py, whose helpers it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import kconfiglib

from harness.kernel.kconfig import (
    BOOL_TRI,
    ConfigError,
    default_in_effect,
    explain_unmet,
    lookup,
    symbol_with_value,
    tri_value,
    value_snapshot,
)

_AND, _OR, _NOT = kconfiglib.AND, kconfiglib.OR, kconfiglib.NOT
_IMPOSSIBLE: float = 10_000  # an estimate (of symbols to set) at or past this means "cannot be done"


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
        default = default_in_effect(sym)
        if default and self.estimate(default, 0) < _IMPOSSIBLE:
            ways.append(("by undoing its default", lambda: self.make(
                default, 0, self.because("is in the default of {}", sym, why))))
        hidden = self.hidden_prompt(sym)
        if hidden and self.estimate(hidden, 1) < _IMPOSSIBLE:
            # A prompt such as `bool "Enable the block layer" if EXPERT`: show it, then answer n.
            ways.append(("through its prompt", lambda: self.show_and_set(
                sym, 0, hidden, 1, self.because("shows the prompt of {}", sym, why))))
        if not ways:
            shown = kconfiglib.expr_str(default, symbol_with_value) if default else "none"
            raise ConfigError(f"CONFIG_{sym.name} stays {tri_value(sym)}: it has no prompt a user can answer, and "
                              f"nothing settable can make its default ({shown}) n")
        self.least_moving(ways, lambda: True, f"turn off CONFIG_{sym.name}")

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
                             partial(self.select, sym, term, select_need, why), term, select_need, 0))
        for default, cond in sym.defaults:
            if default is not self.kconf.n:
                d = (_AND, default, cond)
                ways.append((f"through its default {kconfiglib.expr_str(default)}",
                             partial(self.make, d, need, self.because("is in the default of {}", sym, why)),
                             d, need, 0))
        if sym.weak_rev_dep is not self.kconf.n:
            for term in kconfiglib.split_expr(sym.weak_rev_dep, _OR):
                t = (_AND, term, sym.direct_dep)
                ways.append((f"implied by {_selector(term).name}",
                             partial(self.make, t, need, self.because("implies {}", sym, why)), t, need, 0))
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
                ways: list[Way] = [(kconfiglib.expr_str(p), partial(self.make, p, want, why)) for p in parts]
                what = f"make {kconfiglib.expr_str(expr)} {'n' if want == 0 else 'true'}"
                if want == 0:
                    ways = [way for way, p in zip(ways, parts, strict=True) if self.estimate(p, 0) < _IMPOSSIBLE]
                    if not ways:
                        raise ConfigError(f"{kconfiglib.expr_str(expr, symbol_with_value)} cannot become n: "
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
            raise ConfigError(f"{kconfiglib.expr_str(expr, symbol_with_value)} cannot be changed automatically")
        if not _holds(expr, want):
            raise ConfigError(f"{kconfiglib.expr_str(expr, symbol_with_value)} did not become "
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
                default, hidden = default_in_effect(sym), self.hidden_prompt(sym)
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
            and sc.orig_type in BOOL_TRI)


def _sc_str(sc: object) -> str:
    if isinstance(sc, kconfiglib.Symbol) and not sc.is_constant and not sc.nodes:
        return f"{sc.name} (not defined for this architecture)"
    return kconfiglib.expr_str(sc, symbol_with_value)


def _or_all(exprs: list) -> object:
    result = exprs[0]
    for expr in exprs[1:]:
        result = (_OR, result, expr)
    return result


def _require_bool(sym: kconfiglib.Symbol, what: str) -> None:
    if sym.orig_type not in BOOL_TRI:
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
    unmet = [kconfiglib.expr_str(part, symbol_with_value) for part in parts if kconfiglib.expr_value(part) < 2]
    text = f"it depends on {kconfiglib.expr_str(sym.direct_dep, symbol_with_value)}"
    if unmet:
        text += f", and {' and '.join(unmet)} {'is' if len(unmet) == 1 else 'are'} not met (not y)"
    else:
        text += ", and its prompt is hidden by a condition of its own"
    return text + ". Turn those on first (--on, --set or a fragment line)."
