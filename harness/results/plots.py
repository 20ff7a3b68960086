"""The report's plots, as PNG images: notifier events per workload, and boot and suite times per cell.

matplotlib is optional: without it the report says so instead. Every label comes from a run's
files (test ids, event names, cell ids), so none is parsed as mathtext: a `$` in a test's parameters
would otherwise be read as a formula, and a malformed one stops the whole report.
"""

from __future__ import annotations

import io
from types import ModuleType
from typing import TYPE_CHECKING

from harness.results.cell import kernel_id
from harness.results.load import RunReport
from harness.results.visible import visible

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

EVENTS_TITLE = "Notifier events per workload (invalidate_range_start, by event)"
TIMES_TITLE = "Boot and suite times per cell"


def plot_images(run: RunReport) -> list[tuple[str, bytes | None]] | None:
    """(title, PNG or None when there is no data) for each plot; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out: list[tuple[str, bytes | None]] = []
    for title, fig in ((EVENTS_TITLE, _plot_events(run, plt)), (TIMES_TITLE, _plot_times(run, plt))):
        if fig is None:
            out.append((title, None))
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.append((title, buf.getvalue()))
    return out


def _workload(nodeid: str) -> str:
    """A test's short name for a plot: its parameters when it has them (the workload), else its function."""
    name = nodeid.rsplit("::", 1)[-1]
    return name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else name


def _plot_events(run: RunReport, plt: ModuleType) -> Figure | None:
    # One bar per (workload, kernel): the machine does not change what the notifier sees, so the
    # first cell of each kernel stands for it, and the two kernel series sit side by side.
    bars: dict[tuple[str, str], dict[str, int]] = {}
    for c in run.cells:
        for t in c.tests:
            if t.events:
                bars.setdefault((t.name, kernel_id(c.cell.kernel)), t.events)
    if not bars:
        return None
    keys = sorted(bars, key=lambda k: k[0])  # stable: each workload's kernels stay in matrix order
    kinds = sorted({kind for ev in bars.values() for kind in ev})
    labels = [visible(f"{_workload(name)} [{kid}]") for name, kid in keys]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.26 * len(keys)))
    left = [0] * len(keys)
    for kind in kinds:
        values = [bars[k].get(kind, 0) for k in keys]
        ax.barh(range(len(keys)), values, left=left, label=visible(kind))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(keys)), labels, fontsize=8, parse_math=False)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlabel("invalidate_range_start events seen by the probe, by event")
    _plain_legend(ax)
    return fig


def _plot_times(run: RunReport, plt: ModuleType) -> Figure | None:
    cells = [c for c in run.cells if c.boot_s or c.tests or c.duration_s]
    if not cells:
        return None
    labels = [visible(c.id) for c in cells]
    series = {"boot to SSH (first VM)": [c.first_boot_s or 0 for c in cells],
              "tests (sum of test times)": [c.tests_time_s for c in cells],
              "whole cell (wall)": [c.duration_s or 0 for c in cells]}
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.3 * len(cells)))
    height = 0.8 / len(series)
    for n, (name, values) in enumerate(series.items()):
        ax.barh([i + n * height for i in range(len(cells))], values, height=height, label=name)
    ax.set_yticks([i + height for i in range(len(cells))], labels, fontsize=8, parse_math=False)
    ax.invert_yaxis()
    ax.set_xscale("log")  # a cell killed at its timeout would flatten every other bar on a linear axis
    ax.set_xlabel("seconds (log scale)")
    _plain_legend(ax)
    return fig


def _plain_legend(ax: Axes) -> None:
    """The legend, its labels (event names, series) shown as written: never parsed as mathtext."""
    for text in ax.legend(loc="lower right", fontsize=8).get_texts():
        text.set_parse_math(False)
