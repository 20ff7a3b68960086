"""Commands with a machine-readable output keep stdout for it alone: progress, builds, apt and the output
of the processes they start go to stderr (harness/cli/output.py). `harness kernel | jq` works on a
cold cache as on a warm one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness import paths
from harness.app import kernel as kernel_app
from harness.app.compare import CompareResult
from harness.cli import compare as compare_cli
from harness.cli.main import main
from harness.cli.output import progress_to_stderr
from harness.results import summary as report_summary
from tests.fake_harness import write_results


def _noisy_work() -> None:
    """What a build does to stdout: Python's prints and a child's own output (make, apt-get)."""
    print("building kernel 6.12.117 ...", flush=True)
    subprocess.run(["echo", "  CC      mm/rmap.o"], check=True)


def test_progress_to_stderr_takes_children_along(capfd: pytest.CaptureFixture[str]):
    with progress_to_stderr():
        _noisy_work()
    print("the document")
    out, err = capfd.readouterr()
    assert out == "the document\n"
    assert "building kernel" in err and "CC      mm/rmap.o" in err


def _fake_prepared(tmp_path: Path) -> types.SimpleNamespace:
    build = types.SimpleNamespace(kernel_image=tmp_path / "bzImage", config=tmp_path / ".config", release="6.12.117",
                                  arch=types.SimpleNamespace(name="x86_64"))
    return types.SimpleNamespace(build=build, image=types.SimpleNamespace(initramfs=tmp_path / "initramfs"),
                                 tree=types.SimpleNamespace(identity="debian:test"), timings={"kernel_s": 512.0})


def test_harness_kernel_prints_only_its_json_while_it_builds(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch):
    def building(*args: object, **kwargs: object) -> types.SimpleNamespace:
        _noisy_work()
        return _fake_prepared(tmp_path)

    monkeypatch.setattr(kernel_app, "prepare", building)
    assert main(["kernel"]) == 0
    out, err = capfd.readouterr()
    doc = json.loads(out)
    assert doc["release"] == "6.12.117" and doc["timings"]["kernel_s"] == 512.0
    assert "CC      mm/rmap.o" in err


def test_harness_compare_prints_only_its_report(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch):
    comparison = types.SimpleNamespace(exit_code=lambda: 0)

    def comparing(req: object) -> CompareResult:
        _noisy_work()
        return CompareResult(comparison, tmp_path)  # type: ignore[arg-type]

    monkeypatch.setattr(compare_cli, "run_compare", comparing)
    monkeypatch.setattr("harness.app.compare.compare.render_text", lambda c: "REPORT: nothing changed\n")
    assert main(["compare", "--patch", "x.patch"]) == 0
    out, err = capfd.readouterr()
    assert out == "REPORT: nothing changed\n"
    assert "building kernel" in err and f"results: {tmp_path}" in err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=paths.REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_harness_report_prints_its_summary_alone(tmp_path: Path):
    run = tmp_path / "run"
    write_results(run, "suites/test_events.py", [("test_a", "PASS"), ("test_b", "FAIL")])
    proc = _cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert proc.stdout == report_summary.format_summary(summary) + "\n"


@pytest.mark.e2e
def test_harness_kernel_stdout_is_one_json_document():
    """The real command (it builds when the kernel is not cached: make test builds it first)."""
    proc = _cli("kernel")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert Path(doc["bzImage"]).is_file() and Path(doc["initramfs"]).is_file()


@pytest.mark.e2e
def test_harness_bench_stdout_is_its_figures():
    proc = _cli("bench", "--boots=1")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["boot_to_ssh_s"]["n"] == 1 and "bench.json: " in proc.stderr
