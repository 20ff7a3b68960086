"""`harness fuzz` as a suite: a fixed time of fuzzing on the session's kernel, so that every matrix cell (the
nightly's among them) fuzzes and reports what it found. The time is --fuzz-time (default 120 s).

A finding that configs/fuzz.yaml lists as known (the two test_hmm bugs, docs/fuzz.md) is reported and does not
fail the test; any other finding fails it, with the minimal program, its reproducer and regression test, and
KCIDB issues in the test's directory (fuzz/findings/, fuzz/kcidb.json)."""

from __future__ import annotations

import json
import secrets

import pytest

from harness.fuzz import report
from harness.fuzz.campaign import Campaign, Corpus, Found
from harness.fuzz.program import Generator, load_config
from harness.fuzz.runner import MIRRORS, FuzzGuest
from harness.vm.machine import accel_for

# fresh_guest: the campaign loads test_hmm and leaves whatever its programs did
pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.fresh_guest]
DEFAULT_S = 120.0


@pytest.mark.test_timeout(DEFAULT_S + 600)  # the campaign, its boots, a shrink; --fuzz-time longer: --test-timeout
def test_fuzzing_finds_nothing_new(guest, kernel, run_dir, pytestconfig, request):
    # `guest`: the session's guest first, so that a kernel that does not boot (or a --boot-timeout it cannot
    # meet) ends this test as it ends every other, before the campaign's own guests boot
    seconds = float(pytestconfig.getoption("fuzz_time", None) or DEFAULT_S)
    out = run_dir.test_dir(request.node.nodeid) / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    seed = str(secrets.randbelow(10**9))
    config = load_config()
    mirrors = MIRRORS if kernel.build.has("TEST_HMM") else ("model",)
    fuzzing = FuzzGuest(kernel, pytestconfig.getoption("machine"), out, accel_for(kernel), mirrors, config,
                        boot_timeout=pytestconfig.getoption("boot_timeout") or 180)
    found: list[Found] = []

    def record(f: Found) -> None:
        found.append(f)
        report.write_finding(out, len(found), f, kernel)

    try:
        fuzzing.run(())  # boots, and tells what the guest has
        campaign = Campaign([fuzzing], Generator(config, fuzzing.features), Corpus.open(seed, resume=False), seed,
                            record, shrink_budget=60)
        stats = campaign.run(seconds)
    finally:
        fuzzing.stop()
    (out / "fuzz.json").write_text(json.dumps({"seed": seed, "seconds": seconds, "programs": stats.programs,
                                               "ops": stats.ops, "known": stats.known,
                                               "findings": [f.finding.to_json() for f in found]}, indent=1))
    (out / "kcidb.json").write_text(json.dumps(report.kcidb(found, kernel, out), indent=1))
    print(f"fuzz: seed {seed}: {stats.programs} programs, {stats.ops} operations in {seconds:.0f} s; known: "
          f"{stats.known or 'none'}")
    assert stats.programs > 0, "no program ran"
    assert not found, f"seed {seed}: " + "; ".join(f"{f.finding.describe()} (minimal program: "
                                                    f"{len(f.minimal)} operations)" for f in found) + f"; see {out}"
