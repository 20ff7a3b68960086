"""Driver tests catch a planted fault: `harness driver` on tests/driver_fault_suite/, where a WARN_ON is
planted while a real driver workload runs (test_hmm's selftest, a KVM guest, virtio-gpu buffers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from tests.fault_outcomes import expected_outcomes

pytestmark = pytest.mark.e2e
SUITE = paths.REPO / "tests/driver_fault_suite/test_planted.py"


def test_a_warn_during_a_driver_test_fails_that_test(tmp_path: Path):
    expected = expected_outcomes(SUITE)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "driver", "test_hmm", f"--suite={SUITE}",
                           "--guest-modules=fault_inject", f"--results-dir={tmp_path}"],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    results = {r["test"]: r for r in json.loads((tmp_path / "outcomes.json").read_text())}
    assert {t: r["outcome"] for t, r in results.items()} == expected, json.dumps(results, indent=1)
    for test, r in results.items():
        if r["outcome"] == "FAIL":
            assert r["reason"] == "kernel splat(s) during the test: WARNING in warn_write", r
            assert "WARNING" in Path(r["dmesg"]).read_text(), test
    assert "driver test_hmm: FAIL (3 fail, 2 pass)" in proc.stdout, out[-3000:]
    assert f"results: {tmp_path}" in proc.stdout
