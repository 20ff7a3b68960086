"""Kconfig for a person: why a symbol has its value (`harness config explain`), and what differs between two
.configs (`harness config diff`). Read-only views of a tree loaded by kconfig.py, whose helpers they use.
"""

from __future__ import annotations

from pathlib import Path

import kconfiglib

from harness.kernel.kconfig import (
    BOOL_TRI,
    default_in_effect,
    lookup,
    read_config_values,
    symbol_with_value,
    tri_value,
)


def explain(kconf: kconfiglib.Kconfig, name: str) -> str:
    """Why a symbol has its value: prompt, dependencies, selectors, implies and defaults, with values."""
    sym = lookup(kconf, name)
    value = tri_value(sym) if sym.orig_type in BOOL_TRI else repr(sym.str_value)
    where = ", ".join(f"{node.filename}:{node.linenr}" for node in sym.nodes)
    lines = [f"CONFIG_{sym.name} ({kconfiglib.TYPE_TO_STR[sym.orig_type]}) = {value}    [{where}]"]
    prompts = [node.prompt[0] for node in sym.nodes if node.prompt]
    if prompts:
        shown = "shown" if sym.visibility else "hidden: its dependencies are not met"
        lines.append(f'  prompt: "{prompts[0]}" ({shown})')
    else:
        lines.append("  prompt: none, so only a select or a default can give it a value")
    deps = "nothing" if sym.direct_dep is kconf.y else kconfiglib.expr_str(sym.direct_dep, symbol_with_value)
    lines.append(f"  depends on: {deps}")
    for label, expr in (("selected by", sym.rev_dep), ("implied by", sym.weak_rev_dep)):
        terms = kconfiglib.split_expr(expr, kconfiglib.OR) if expr is not kconf.n else []
        active = [_term_str(t) for t in terms if kconfiglib.expr_value(t)]
        inactive = [_term_str(t) for t in terms if not kconfiglib.expr_value(t)]
        if not terms:
            lines.append(f"  {label}: nothing")
        if active:
            lines.append(f"  {label} (active): {', '.join(active)}")
        if inactive:
            lines.append(f"  {label} (inactive): {', '.join(inactive)}")
    default = default_in_effect(sym)
    if default:
        value_expr, cond = default[1], default[2]
        text = kconfiglib.expr_str(value_expr, symbol_with_value)
        if cond is not kconf.y:
            text += f" if {kconfiglib.expr_str(cond, symbol_with_value)}"
        lines.append(f"  default in effect: {text}")
    else:
        lines.append(f"  default in effect: none ({len(sym.defaults)} defined)")
    lines.append(f"  value comes from: {_value_source(sym, default is not None)}")
    return "\n".join(lines)


def _term_str(term: object) -> str:
    """`SELECTOR[=y]`, plus its conditions when the selector is on but the select is not in effect."""
    selector, *conds = kconfiglib.split_expr(term, kconfiglib.AND)
    text = symbol_with_value(selector)
    unmet = [kconfiglib.expr_str(c, symbol_with_value) for c in conds if not kconfiglib.expr_value(c)]
    if kconfiglib.expr_value(selector) and unmet:
        text += f" (but {' && '.join(unmet)})"
    return text


def _value_source(sym: kconfiglib.Symbol, has_default: bool) -> str:
    if sym.orig_type in BOOL_TRI and kconfiglib.expr_value(sym.rev_dep):
        return "a select (a select overrides the prompt and the defaults)"
    if sym.visibility and sym.user_value is not None:
        return "the configuration's own setting (the prompt is shown)"
    if has_default:
        return "the default in effect"
    if any(node.prompt for node in sym.nodes):
        return "nothing: the prompt is hidden and no default applies, so it is off"
    return "nothing sets it, so it is off" if sym.orig_type in BOOL_TRI else "nothing sets it"


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
