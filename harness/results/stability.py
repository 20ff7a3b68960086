"""Which tests are unstable: FLAKY (failed, then passed on a fresh guest) in at least K of the last N runs of
a store (a matrix's nightly runs), this one included. NIPA's rule is the model: a test that flakes is not news
each night; the report lists it apart until it has stopped flaking for N runs.

Earlier runs are read from their summary.json (its `flaky` list), which `harness report` and the matrix runner
write; a run whose summary predates the list counts as one without flakes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.results.load import RunReport, entries, previous_runs
from harness.results.model import read_json
from harness.results.outcome import Outcome
from harness.results.schema import Unstable

UNSTABLE_AFTER = 2  # K: FLAKY in at least this many ...
WINDOW = 10  # ... of the last N runs


def unstable(run: RunReport, k: int = UNSTABLE_AFTER, n: int = WINDOW) -> list[Unstable]:
    """The tests FLAKY in at least k of the last n runs of run's store (run the newest of them)."""
    flakes = Counter((c.id, name) for c in run.cells for name, e in entries(c).items() if e.outcome == Outcome.FLAKY)
    earlier = previous_runs(run.dir)[:n - 1]
    for past in earlier:
        summary = read_json(Path(past) / "summary.json")
        listed = summary.get("flaky") if isinstance(summary, dict) else None
        flakes.update({(str(f.get("cell")), str(f.get("test"))) for f in listed or [] if isinstance(f, dict)})
    runs = 1 + len(earlier)
    return [Unstable(cell=cell, test=test, flaky=count, runs=runs)
            for (cell, test), count in sorted(flakes.items()) if count >= k]
