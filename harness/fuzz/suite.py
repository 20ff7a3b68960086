"""A fuzz program as a test of suites/: what a finding's regression test (harness/fuzz/report.py) calls."""

from __future__ import annotations

import json

import pytest

from harness.fuzz import runner
from harness.fuzz.oracle import Outcome
from harness.fuzz.program import load_config, parse
from harness.guest import Guest
from harness.kernel import userprogs
from harness.kernel.prepare import Prepared


def run_in(guest: Guest, kernel: Prepared, program_text: str) -> Outcome:
    """Run the program on the test's guest, with test_hmm where the kernel has it, through the fuzzer's oracle."""
    program = parse(program_text, "the test's PROGRAM")
    ssh = guest.ssh
    ssh.run(["mkdir", "-p", "/tmp/fuzz"], check=True)
    ssh.put(userprogs.kprogram(kernel.build, "fuzz_exec"), runner.EXEC)
    hmm = ssh.run(["modprobe", "test_hmm"]).ok and ssh.run(["test", "-e", "/dev/hmm_dmirror0"]).ok
    out = runner.run_program(ssh, program, [] if hmm else ["--no-hmm"], load_config())
    guest.save("fuzz-run.json", json.dumps(out.to_json(), indent=1))
    return out


def assert_runs_clean(guest: Guest, kernel: Prepared, program_text: str) -> None:
    out = run_in(guest, kernel, program_text)
    if not out.done and out.finding is None:
        pytest.fail(f"the program did not run to its end: {'; '.join(out.notes)}")
    assert out.finding is None, f"{out.finding.describe()} (the run: fuzz-run.json in the test's directory)"
