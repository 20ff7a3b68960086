"""report.html: a self-contained page of a run: the matrix as a grid (cell x suite), regressions,
failures with reproducers, slowest tests, plots (plots.py) and every cell's tests."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.results.cell import suite_id
from harness.results.load import CellReport, RunReport, count_outcomes
from harness.results.plots import plot_images
from harness.results.regressions import NOISE_MIN_DELTA_S, NOISE_RATIO
from harness.results.schema import Failure, Regressions, Slow, Summary
from harness.results.visible import visible

COLOURS = {"PASS": "#2e7d32", "SKIP": "#8d8d8d", "XFAIL": "#558b2f", "FAIL": "#c62828", "CRASH": "#6a1b9a",
           "TIMEOUT": "#ef6c00", "ERROR": "#ad1457", "INFRA": "#1565c0"}
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
.grid td.cell { color: #fff; text-align: center; min-width: 6.5em; font-size: 0.9em; }
table.failures { table-layout: fixed; width: 100%; } table.failures td { overflow-wrap: anywhere; }
.grid td.cell a { color: #fff; } .grid td.none { background: #fafafa; color: #aaa; text-align: center; }
.badge { display: inline-block; color: #fff; padding: 1px 7px; border-radius: 3px; font-size: 0.85em; }
code { background: #f4f4f4; padding: 1px 4px; font-size: 0.9em; word-break: break-all; }
.reason { max-width: 55em; white-space: pre-wrap; }
.muted { color: #777; } img { max-width: 100%; border: 1px solid #eee; }
"""


def _e(value: object) -> str:
    """Text for the page: control characters spelled out (a guest's reason may hold any), then escaped."""
    return html.escape(visible(str(value)), quote=True)


def _badge(outcome: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(outcome, "#555")}">{_e(outcome)}</span>'


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else ""


def render_html(run: RunReport, summary: Summary) -> str:
    title = f"matrix {run.matrix}" if run.matrix else "harness run"
    t = summary["totals"]
    meta = run.record
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)} <span class='muted'>{_e(run.dir.name)}</span>"
             "</h1>", "<p>" + " ".join(f"{_badge(o)} {n}" for o, n in t["cell_outcomes"].items()) +
             f" &nbsp; {t['cells']} cells, {t['tests']} tests"
             + (f", {meta.duration_s:.0f} s" if meta.duration_s else "")
             + (f", started {_e(meta.started)}" if meta.started else "") + "</p>"]
    parts.append(_html_grid(run))
    if summary["comparison"]:
        parts.append(_html_regressions(summary["comparison"]))
    parts.append(_html_failures("Failures", summary["failures"], "No test failures."))
    parts.append(_html_failures("Infrastructure failures (not test failures; each was retried once)",
                                summary["infra"], "None."))
    parts.append(_html_failures("FLAKY (failed, then passed on a fresh guest)", summary["flaky"], "None."))
    if summary["unstable"]:
        rows = "".join(f"<li>{_e(u['cell'])} :: {_e(u['test'])}: FLAKY in {u['flaky']} of the last {u['runs']} runs"
                       "</li>" for u in summary["unstable"])
        parts.append(f"<h2>Unstable tests</h2><ul>{rows}</ul>")
    parts.append(_html_slowest(summary["slowest"]))
    parts.append(_html_plots(run))
    parts.append(_html_cells(run))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_grid(run: RunReport) -> str:
    def row(c: CellReport) -> tuple[str, str, str, str]:
        return c.cell.kernel, c.cell.notifier, c.cell.fragment, c.cell.machine

    rows = list(dict.fromkeys(row(c) for c in run.cells))
    suites = list(dict.fromkeys(c.cell.suite for c in run.cells))
    by_key = {(*row(c), c.cell.suite): c for c in run.cells}
    out = ["<h2>Matrix</h2><table class='grid'><tr><th>kernel</th><th>notifier</th><th>fragment</th><th>machine</th>",
           *(f"<th>{_e(suite_id(s))}</th>" for s in suites), "</tr>"]
    for kernel, notifier, fragment, machine in rows:
        out.append(f"<tr><th>{_e(kernel)}</th><th>{_e(notifier)}</th><th>{_e(fragment or '-')}</th>"
                   f"<th>{_e(machine)}</th>")
        for s in suites:
            c = by_key.get((kernel, notifier, fragment, machine, s))
            if c is None:
                out.append("<td class='none'>&mdash;</td>")
                continue
            counts = count_outcomes([x.outcome for x in c.tests])
            detail = ", ".join(f"{n} {o.lower()}" for o, n in counts.items()) or _e(c.reason[:60])
            consoles = [_link(p, f"console {n}") for n, p in enumerate(c.console_logs, 1)]
            if len(consoles) > 2:  # a cell that replaced many VMs: the rest are in its section below
                consoles = [*consoles[:2], f"<a href='#{_e(c.id)}'>+{len(consoles) - 2}</a>"]
            links = " ".join(x for x in (_link(c.log, "log"), *consoles) if x)
            retried = " (retried)" if len(c.attempts) > 1 else ""
            out.append(f"<td class='cell' style='background:{COLOURS.get(c.outcome, '#555')}' "
                       f"title='{_e(c.id)}'><a href='#{_e(c.id)}'><b>{_e(c.outcome)}</b></a>{retried}"
                       f"<br>{detail}<br><small>{links}</small></td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _html_failures(title: str, items: list[Failure], empty: str) -> str:
    if not items:
        return f"<h2>{_e(title)}</h2><p class='muted'>{_e(empty)}</p>"
    rows = "".join(
        f"<tr><td>{_badge(f['outcome'])}</td><td><a href='#{_e(f['cell'])}'>{_e(f['cell'])}</a></td>"
        f"<td>{_e(f['test'])}</td><td class='reason'>{_e(f['reason'][:600])}</td>"
        f"<td><code>{_e(f['reproducer'])}</code></td><td>{_link(f['log'], 'log')}</td></tr>"
        for f in items)
    cols = "".join(f"<col style='width:{w}'>" for w in ("7em", "11em", "28%", "24%", "auto", "3em"))
    return (f"<h2>{_e(title)}</h2><table class='failures'><colgroup>{cols}</colgroup><tr><th>outcome</th>"
            f"<th>cell</th><th>test</th><th>reason</th><th>reproducer</th><th></th></tr>{rows}</table>")


def _html_slowest(slowest: list[Slow]) -> str:
    rows = "".join(f"<tr><td>{t['duration_s']:.2f} s</td><td>{_e(t['cell'])}</td><td>{_e(t['test'])}</td>"
                   f"<td>{_badge(t['outcome'])}</td></tr>" for t in slowest)
    return (f"<h2>Slowest tests</h2><table><tr><th>time</th><th>cell</th><th>test</th><th></th></tr>{rows}"
            "</table>")


def _change(i: Mapping[str, object]) -> str:
    """One item of a list of regressions: a timing, or an outcome that changed."""
    if "before_s" in i:
        return f"{i['before_s']:.1f} s &rarr; {i['after_s']:.1f} s"
    return f"{_e(i.get('was') or 'absent')} &rarr; {_e(i.get('outcome', ''))}"


def _html_regressions(found: Regressions) -> str:
    verdict = ("<b style='color:#c62828'>regressed</b>" if found["regressed"]
               else "<b style='color:#2e7d32'>no regressions</b>")
    out = [f"<h2>Compared with {_e(Path(found['previous']).name)}: {verdict}</h2>"]
    lists: tuple[tuple[str, Sequence[Mapping[str, object]]], ...] = (
        ("New failures", found["new_failures"]), ("Fixes", found["fixes"]), ("Slower beyond noise", found["slower"]),
        ("Faster beyond noise", found["faster"]), ("New tests", found["new_tests"]),
        ("Vanished tests", found["vanished_tests"]), ("Infrastructure failures", found["infra"]))
    for title, items in lists:
        if not items:
            continue
        lis = "".join(f"<li><b>{_e(i['cell'])}</b> :: {_e(i['test'])} ({_change(i)})</li>" for i in items)
        # Long lists (a new suite brings dozens of new tests) fold away, so that the page stays readable.
        summary = f"{title}: {len(items)}"
        out.append(f"<details{' open' if len(items) <= 10 else ''}><summary>{_e(summary)}</summary><ul>{lis}"
                   "</ul></details>")
    for title, cells in (("New cells", found["new_cells"]), ("Cells of the previous run not run now",
                                                             found["cells_not_run"])):
        if cells:
            out.append(f"<p>{_e(title)}: {_e(', '.join(cells))}</p>")
    out.append(f"<p class='muted'>Timing noise: a change counts when it is at least {NOISE_RATIO:g}&times; "
               f"and at least {NOISE_MIN_DELTA_S:g} s.</p>")
    return "".join(out)


def _html_cells(run: RunReport) -> str:
    out = ["<h2>Cells</h2>"]
    for c in run.cells:
        rows = "".join(
            f"<tr><td>{_badge(t.outcome)}</td><td>{_e(t.name)}</td><td>{t.duration_s:.2f} s</td>"
            f"<td class='reason'>{_e(t.reason[:300])}</td><td>{_link(t.console_log, 'console')} "
            f"{_link(t.dmesg, 'dmesg')} {_link(t.registers, 'registers')}</td></tr>" for t in c.tests)
        attempts = "; ".join(f"attempt {n}: {a.outcome} {a.reason}" for n, a in enumerate(c.attempts, 1)
                             if len(c.attempts) > 1)
        boot = ", ".join(f"{b:.1f} s" for b in c.boot_s if b is not None)
        out.append(
            f"<h3 id='{_e(c.id)}'>{_badge(c.outcome)} {_e(c.id)}</h3><p>"
            f"<code>{_e(c.command)}</code><br>kernel {_e(c.cell.kernel)} ({_e(c.release or '?')}), notifier "
            f"{_e(c.cell.notifier)}{_fragment_note(c)}, machine {_e(c.cell.machine)}, suite {_e(c.cell.suite)}"
            + (f"; cell {c.duration_s:.0f} s" if c.duration_s else "")
            + (f"; boot to SSH {boot}" if boot else "") + f" {_link(c.log, 'harness.log')}"
            + (f"<br><span class='reason'>{_e(c.reason)}</span>" if c.reason else "")
            + (f"<br>{_e(attempts)}" if attempts else "")
            + (f"<br>kernel build failed; reproduce: <code>{_e(c.build.command)}</code>"
               f"<pre>{_e(c.build.error[-3000:])}</pre>" if c.build else "")
            + "</p>" + (f"<table>{rows}</table>" if rows else ""))
    return "".join(out)


def _fragment_note(cell: CellReport) -> str:
    return f", fragment {_e(cell.cell.fragment)}" if cell.cell.fragment else ""


def _html_plots(run: RunReport) -> str:
    images = plot_images(run)
    if images is None:
        return "<h2>Plots</h2><p class='muted'>matplotlib is not installed: no plots.</p>"
    out = ["<h2>Plots</h2>"]
    for title, png in images:
        if png is None:
            out.append(f"<h3>{_e(title)}</h3><p class='muted'>no data</p>")
            continue
        out.append(f"<h3>{_e(title)}</h3><img alt='{_e(title)}' src='data:image/png;base64,"
                   f"{base64.b64encode(png).decode()}'>")
    return "".join(out)
