"""`harness driver NAME` on the real 6.12 build: the profile's machine and suites, a verdict, and results in
JUnit, a kernel hmm-test one JUnit case with the kernel's log.

What these prove is the command (profile, machine, -k, verdict, JUnit), not the drivers: make test runs
suites/test_hmm.py, test_kvm.py and test_virtio_gpu.py whole on the same kernel. So each runs the fewest
tests that still give every verdict a driver run can end in when green: a pass, a kernel skip with its
reason and a known kernel failure (xfail) for test_hmm; one test on the profile's own machine for kvm and
virtio-gpu, which passes only there (kvm_amd needs the kvm machine's SVM CPU, the DRM device the
virtio-gpu machine's virtio-gpu-pci)."""

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


def junit_outcome(case: ET.Element) -> str | None:
    """The outcome the harness recorded for a JUnit case (a property, harness/pytest_plugin.py)."""
    return next((p.get("value") for p in case.iter("property") if p.get("name") == "outcome"), None)


# Three kernel hmm-tests of 6.12 and what each must end in there:
HMM_TESTS = {
    "hmm.hmm_device_private.anon_read": "PASS",
    # lib/test_hmm.c registers coherent devices only when given spm_addr_dev0/1: the kernel test skips
    "hmm.hmm_device_coherent.open_close": "SKIP",
    # the guest's THP is `always` (CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS) and 6.12's mm/rmap.c has the code the
    # profile's first known failure names: HMM_DMIRROR_EXCLUSIVE fails with -EBUSY, an xfail with its reason
    "hmm.hmm_device_private.exclusive": "XFAIL",
}


def test_test_hmm(tmp_path: Path):
    # `]` ends a parametrized test's id: anon_read, not anon_read_prot; exclusive, not exclusive_cow
    proc = driver("test_hmm", tmp_path, "-k", " or ".join(f"{name}]" for name in HMM_TESTS))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "driver test_hmm: PASS (1 pass, 1 xfail, 1 skip) on " in proc.stdout, proc.stdout[-3000:]
    assert f"results: {tmp_path}" in proc.stdout
    # the verdict names the known failure with the profile's reason
    assert ("  XFAIL test_kernel_selftest[hmm.hmm_device_private.exclusive]: known kernel failure: "
            "HMM_DMIRROR_EXCLUSIVE returns -EBUSY on a THP-backed buffer") in proc.stdout, proc.stdout[-3000:]
    junit = cases(tmp_path)
    assert sorted(junit) == sorted(f"test_kernel_selftest[{name}]" for name in HMM_TESTS), sorted(junit)
    src = userprogs.hmm_tests_source(source.resolve(None).path)
    assert src is not None
    assert HMM_TESTS.keys() <= set(ktap.tests_in_source(src.read_text()))
    for name, outcome in HMM_TESTS.items():  # one JUnit case per kernel test, with its outcome and log
        case = junit[f"test_kernel_selftest[{name}]"]
        assert junit_outcome(case) == outcome, (name, ET.tostring(case)[:500])
        out = "".join(e.text or "" for e in case.iter("system-out"))
        assert f" {name}" in out and "TAP version" in out, (name, ET.tostring(case)[:500])
    skipped = junit["test_kernel_selftest[hmm.hmm_device_coherent.open_close]"].find("skipped")
    assert skipped is not None and skipped.get("message") == "kernel: DEVICE_COHERENT not available"
    assert junit["test_kernel_selftest[hmm.hmm_device_private.anon_read]"].find("skipped") is None


@pytest.mark.parametrize(("name", "test"), [("kvm", "test_kvm_is_up"), ("virtio-gpu", "test_driver_probed")])
def test_device_drivers(tmp_path: Path, name: str, test: str):
    proc = driver(name, tmp_path, "-k", test)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"driver {name}: PASS (1 pass) on " in proc.stdout, proc.stdout[-2000:]
    assert f"machine {name}" in proc.stdout, proc.stdout[-2000:]  # configs/machines/{kvm,virtio-gpu}.yaml
    junit = cases(tmp_path)
    assert list(junit) == [test], list(junit)
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
