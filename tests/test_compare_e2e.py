"""`harness compare` on Debian's 6.12 with the three patches of tests/data/patches/ (see its README):
real patched kernels, built on the base's build, booted and run against the base in one sitting.

What these prove is the compare machinery (the patched build seeded from the base's, the event diff,
the completeness checks, exit status 0/1/3, intended and not intended changes), not the suites, which
make test runs whole on the same kernel. So each compare runs only the cases its patch reaches: the
mprotect workloads for the two patches of mm/mprotect.c:change_pud_range(), one migration for the patch
of mm/rmap.c:try_to_migrate_one()."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from harness.checks import expectations

pytestmark = pytest.mark.e2e

PATCHES = Path(__file__).parent / "data" / "patches"
# The event suite's mprotect workloads (configs/expectations/events.yaml), each a test of its own: all
# deterministic, none needing anything from the guest, none newer than 6.12, so each runs its program and
# saves its events.json on both kernels.
MPROTECT_CASES = sorted(n for n in expectations.load("") if n.startswith("mprotect/"))


def compare(results: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--patch", str(PATCHES / patch),
                           f"--results-dir={results}", *args], cwd=paths.REPO, capture_output=True, text=True,
                          timeout=2400)


def report(results: Path) -> dict:
    return json.loads((results / "compare.json").read_text())


def test_a_comment_changes_nothing(tmp_path: Path):
    # The comment sits in change_pud_range(), which only mprotect's workloads reach.
    proc = compare(tmp_path, "comment-only.patch", "suites/test_events.py", "-k", "mprotect")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "Verdict: nothing changed (exit 0)" in proc.stdout
    r = report(tmp_path)
    assert r["outcomes"] == [] and r["events"] == [] and r["splats"]["new"] == []
    assert len(MPROTECT_CASES) == 6, MPROTECT_CASES
    assert r["tests"]["base"] == r["tests"]["patched"] == len(MPROTECT_CASES)
    # every mprotect workload was compared, on both kernels
    for side in ("base", "patched"):
        assert len(list((tmp_path / side / "suites" / "tests").glob("*/events.json"))) == len(MPROTECT_CASES)
    # the patched kernel was built on the base's build: only what the patch touched was compiled
    build = r["builds"]["patched"]
    assert build.get("cached") or build["seeded_from_base"], build


def test_mprotect_events_turned_to_clear_are_named_with_their_call_site(tmp_path: Path):
    expect = tmp_path / "expect.yaml"  # the series' stated intent: mprotect's events become CLEAR
    expect.write_text("changes:\n  - {case: 'mprotect/*', from: PROTECTION_VMA, to: CLEAR}\n")
    proc = compare(tmp_path / "run", "mprotect-clear.patch", "suites/test_events.py", "-k", "mprotect",
                   "--expect-events", str(expect))
    assert proc.returncode == 3, proc.stdout + proc.stderr[-4000:]
    r = report(tmp_path / "run")
    changed = {e["case"] for e in r["events"]}
    # every mprotect case whose target has a present PUD entry (events.yaml); unpop-empty has none, so
    # change_p4d_range() skips it before any notifier, on either kernel
    assert changed == {"mprotect/rw-ro", "mprotect/ro-rw", "mprotect/none", "mprotect/unpop-pmd",
                       "mprotect/unpop-pud"}, r["events"]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("  mprotect/")]
    assert len(lines) == 5, proc.stdout
    for line in lines:
        assert re.fullmatch(r"  mprotect/\S+: PROTECTION_VMA x1 → CLEAR x1 on 'target' \(equal\) "
                            r"\(mm/mprotect\.c:change_pud_range\) \[intended\]", line), line
    # the event tests fail on their expectations alone: no regression among them
    assert all(o["kind"] == "events" for o in r["outcomes"]), r["outcomes"]
    assert "Verdict: only notifier events or a device's counters changed (exit 3)" in proc.stdout


def test_migration_that_skips_its_notifier_fails_naming_the_page(tmp_path: Path):
    # move_pages alone: mbind migrates through the same try_to_migrate_one(). It moves 16 order-0 anonymous
    # pages (guest/programs/migrate.c), one notifier range each, and the patch skips those whose old frame
    # is odd: the page allocator hands out frames of both parities (its pcp lists are refilled from split
    # blocks of consecutive frames), so some of the 16 move unannounced.
    proc = compare(tmp_path, "migrate-skip-notifier.patch", "suites/test_migration.py", "-k", "move_pages")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    failures = report(tmp_path)["completeness"]["failures"]
    assert failures["base"] == [], failures
    assert any(re.search(r"page 0x[0-9a-f]+ moved from pfn 0x[0-9a-f]+ to 0x[0-9a-f]+ with no invalidation", f)
               for f in failures["patched"]), failures
    assert "Verdict: REGRESSED (exit 1)" in proc.stdout
