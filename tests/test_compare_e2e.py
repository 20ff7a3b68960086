"""`harness compare` on Debian's 6.12 with the three patches of tests/data/patches/ (see its README):
real patched kernels, built on the base's build, booted and run against the base in one sitting."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths

pytestmark = pytest.mark.e2e

PATCHES = Path(__file__).parent / "data" / "patches"


def compare(results: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", "--patch", str(PATCHES / patch),
                           f"--results-dir={results}", *args], cwd=paths.REPO, capture_output=True, text=True,
                          timeout=2400)


def report(results: Path) -> dict:
    return json.loads((results / "compare.json").read_text())


def test_a_comment_changes_nothing(tmp_path: Path):
    proc = compare(tmp_path, "comment-only.patch", "suites/test_events.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "Verdict: nothing changed (exit 0)" in proc.stdout
    r = report(tmp_path)
    assert r["outcomes"] == [] and r["events"] == [] and r["splats"]["new"] == []
    assert r["tests"]["base"] == r["tests"]["patched"] > 30
    # every deterministic workload of the event suite was compared, on both kernels
    assert len(list((tmp_path / "patched" / "suites" / "tests").glob("*/events.json"))) > 25
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
    assert "Verdict: only notifier events changed (exit 3)" in proc.stdout


def test_migration_that_skips_its_notifier_fails_naming_the_page(tmp_path: Path):
    proc = compare(tmp_path, "migrate-skip-notifier.patch", "suites/test_migration.py")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    failures = report(tmp_path)["completeness"]["failures"]
    assert failures["base"] == [], failures
    assert any(re.search(r"page 0x[0-9a-f]+ moved from pfn 0x[0-9a-f]+ to 0x[0-9a-f]+ with no invalidation", f)
               for f in failures["patched"]), failures
    assert "Verdict: REGRESSED (exit 1)" in proc.stdout
