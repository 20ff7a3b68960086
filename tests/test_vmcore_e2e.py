"""A crash and a hang each leave a vmcore that drgn opens, analysed: the planted panic and hang of
tests/fault_suite/test_vmcore.py on Debian's 6.12 with `--fragment debug/dump` (DWARF, VMCOREINFO handed to QEMU),
run by `harness run` as a user would. The analysis must name the faulting function (fault_inject's panic_write,
hang_write) on the task's stack, and list its mm's notifier subscriptions (test_hmm's interval notifier).

    make test-debug     (one more cold build: configs/fragments/debug/dump.config)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import paths
from harness.observe import vmcore

pytestmark = [pytest.mark.e2e, pytest.mark.debug_kernel]
SUITE = paths.REPO / "tests/fault_suite/test_vmcore.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vmcore") / "run"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", f"--results-dir={out}", "--fragment=debug/dump",
                           "--guest-modules=fault_inject", "--reruns=0", str(SUITE)],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # both tests fail, on purpose
    return out


def _result(run: Path, name: str) -> dict:
    (found,) = [r for r in json.loads((run / "outcomes.json").read_text()) if r["test"].endswith(f"::{name}")]
    return found


@pytest.mark.parametrize("name,outcome,function", [("test_panic_in_a_mirrored_process", "CRASH", "panic_write"),
                                                   ("test_hang_in_a_mirrored_process", "TIMEOUT", "hang_write")])
def test_a_crash_and_a_hang_leave_a_vmcore_drgn_opens_and_its_analysis(run: Path, name: str, outcome: str,
                                                                      function: str) -> None:
    result = _result(run, name)
    assert result["outcome"] == outcome, result
    kept = result["extra"]["vmcore"]
    core = Path(kept["vmcore"])
    assert core.stat().st_size == int(kept["bytes"]) > 0 and float(kept["dump_s"]) > 0
    assert core.parent == Path(result["console_log"]).parent, "the dump is its VM's, beside the console log"
    analysis = Path(kept["analysis"]).read_text()
    assert f" {function} (" in analysis, analysis  # a frame of the faulting function, with its source line
    assert "interval: [0x0," in analysis and "ops dmirror_min_ops" in analysis, analysis  # test_hmm's notifier
    assert "probe module (mmu_probe): starts " in analysis, analysis
    prog = vmcore.program(core)  # drgn reads the kernel's own state from it
    assert prog["init_task"].comm.string_() == b"swapper/0"
    if outcome == "CRASH":  # the panic printed whole before the dump (panic=0 keeps the guest in it)
        assert "---[ end Kernel panic" in Path(result["console_log"]).read_text()


def test_post_mortem_analyses_every_vmcore_of_a_run(run: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "post-mortem", str(run), "--analyse"], cwd=paths.REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("vmcore: ") == 2 and "panic_write" in done.stdout and "hang_write" in done.stdout
