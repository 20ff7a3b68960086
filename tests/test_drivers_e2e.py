"""`harness driver NAME` on the real 6.12 build, for each driver profile: a verdict, and results in JUnit,
the kernel's own hmm-tests one JUnit case per kernel test with the kernel's log."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import paths
from harness.kernel import source, userprogs
from harness.observe import ktap

pytestmark = pytest.mark.e2e


def driver(name: str, results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "driver", name, f"--results-dir={results}",
                           *args], cwd=paths.REPO, capture_output=True, text=True, timeout=900)


def cases(results: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(results / "junit.xml").getroot().iter("testcase")}


def test_test_hmm(tmp_path: Path):
    proc = driver("test_hmm", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "driver test_hmm: PASS (" in proc.stdout and f"results: {tmp_path}" in proc.stdout
    junit = cases(tmp_path)
    src = userprogs.hmm_tests_source(source.resolve(None).path)
    assert src is not None
    for name in ktap.tests_in_source(src.read_text()):  # one JUnit case per kernel test, with its log
        case = junit[f"test_kernel_selftest[{name}]"]
        out = "".join(e.text or "" for e in case.iter("system-out"))
        assert f" {name}" in out and "TAP version" in out, (name, ET.tostring(case)[:500])
    skipped = junit["test_kernel_selftest[hmm.hmm_device_coherent.open_close]"].find("skipped")
    assert skipped is not None and skipped.get("message") == "kernel: DEVICE_COHERENT not available"
    assert junit["test_kernel_selftest[hmm.hmm_device_private.anon_read]"].find("skipped") is None


@pytest.mark.parametrize("name", ["kvm", "virtio-gpu"])
def test_device_drivers(tmp_path: Path, name: str):
    proc = driver(name, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"driver {name}: PASS (" in proc.stdout, proc.stdout[-2000:]
    junit = cases(tmp_path)
    skipped = [c.find("skipped").get("message") for c in junit.values() if c.find("skipped") is not None]
    # Only KVM may skip: on a machine whose CPU cannot run it, with what the guest kernel said about it.
    assert junit and all(name == "kvm" and m.startswith("no /dev/kvm on machine") for m in skipped), skipped


def test_off_kernel_skips_with_the_reason(tmp_path: Path):
    proc = driver("test_hmm", tmp_path, "--notifier=off", "-k", "open_close or mirrors")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "driver test_hmm: SKIP (" in proc.stdout
    assert "note: fragment mmu-notifier-on.config is not applied on the notifier=off axis" in proc.stdout
    for case in cases(tmp_path).values():
        assert case.find("skipped").get("message") == "CONFIG_MMU_NOTIFIER is not set in this kernel"
