"""prepare() runs once per `harness run`: the run use case (harness/app/run.py) prepares the kernel and hands
that Prepared to the pytest session (harness/session.py), in its process and, under xdist, to its workers by a
serialized reference; timings.json's prepare figures are that one preparation's. A plain pytest session
(without the handoff) prepares the kernel itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import session
from harness.errors import UserError
from harness.kernel.build import KernelBuild
from harness.kernel.image import Image
from harness.kernel.prepare import Prepared
from harness.kernel.source import KernelTree
from tests.test_results_model import plugin_run

TIMINGS = {"source_s": 0.5, "config_s": 3.25, "kernel_s": 512.4, "image_s": 4.0}

# A session that prepared the kernel itself would fail: prepare() is not to be called
NO_PREPARE = '''
import harness.pytest_plugin as plugin


def _no_prepare(*args, **kwargs):
    raise AssertionError("the session prepared the kernel again")


plugin.prepare = _no_prepare
'''

SUITE = '''
import os


def test_uses_the_kernel(kernel, run_dir):
    assert kernel.build.release == "6.12.117"
    (run_dir.root / f"kernel-seen-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}").write_text(kernel.tree.identity)


def test_again(kernel, run_dir):
    (run_dir.root / f"kernel-seen-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}").write_text(kernel.tree.identity)
'''

RUN = '''
import json, sys
from pathlib import Path
from harness import session
from harness.app.run import RunRequest, run_prepared

prepared = session.from_json(json.loads(Path(sys.argv[1]).read_text()))
result = run_prepared(RunRequest(suites=(sys.argv[2],), jobs=int(sys.argv[4])), prepared, Path(sys.argv[3]))
sys.exit(result.exit_code)
'''


def fake_prepared(tmp_path: Path) -> Prepared:
    """A Prepared whose artifacts exist as files (nothing boots: the suite only reads it)."""
    build_dir = tmp_path / "build"
    (build_dir / "arch/x86/boot").mkdir(parents=True)
    (build_dir / "arch/x86/boot/bzImage").write_bytes(b"kernel")
    (build_dir / ".config").write_text("CONFIG_MMU_NOTIFIER=y\n")
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    (image_dir / "initramfs.cpio.gz").write_bytes(b"image")
    (image_dir / "host_key.pub").write_text("ssh-ed25519 AAAA test\n")
    base = KernelTree(tmp_path / "tree", "6.12.117", "debian:test", True)
    tree = KernelTree(tmp_path / "patched", "6.12.117", "patched:test", False, base, ("mm/rmap.c",))
    return Prepared(tree, KernelBuild(tree, build_dir, "key1", "6.12.117"),
                    Image(image_dir / "initramfs.cpio.gz", image_dir / "host_key.pub", image_dir), "on", ("x",),
                    dict(TIMINGS))


def test_a_prepared_kernel_survives_its_serialized_reference(tmp_path: Path):
    prepared = fake_prepared(tmp_path)
    assert session.from_json(json.loads(json.dumps(session.to_json(prepared)))) == prepared


def test_a_reference_to_artifacts_that_are_gone_is_refused(tmp_path: Path):
    prepared = fake_prepared(tmp_path)
    prepared.build.kernel_image.unlink()
    with pytest.raises(UserError, match="bzImage is missing"):
        session.from_json(session.to_json(prepared))


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_run_prepares_once_and_timings_json_has_that_preparation(tmp_path: Path, jobs: int):
    prepared = fake_prepared(tmp_path)
    (tmp_path / "prepared.json").write_text(json.dumps(session.to_json(prepared)))
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "conftest.py").write_text(NO_PREPARE)
    (suites / "test_suite.py").write_text(SUITE)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "prepared.json"), str(suites / "test_suite.py"),
                           str(results), str(jobs)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((results / "timings.json").read_text())["prepare"] == TIMINGS
    seen = {p.name: p.read_text() for p in results.glob("kernel-seen-*")}
    assert set(seen.values()) == {"patched:test"}
    if jobs == 2:  # the workers rebuilt it from the controller's reference
        assert all(name.startswith("kernel-seen-gw") for name in seen), seen
    assert "PytestAssertRewriteWarning" not in proc.stdout + proc.stderr


CACHED = '''
import types
from pathlib import Path

import harness.pytest_plugin as plugin


def _cached(kernel_src, notifier, settings=(), fragments=(), arch="x86_64"):
    here = Path(__file__).parent
    (here / ".config").write_text("CONFIG_MMU_NOTIFIER=y\\n")
    build = types.SimpleNamespace(config=here / ".config", dir=here, release="6.12.117",
                                  arch=types.SimpleNamespace(name=arch))
    tree = types.SimpleNamespace(path=here, version="6.12.117", identity="test")
    return types.SimpleNamespace(tree=tree, build=build, image=types.SimpleNamespace(dir=here), notifier=notifier,
                                 fragments=fragments,
                                 timings={"source_s": 0.01, "config_s": 0.0, "kernel_s": 0.02, "image_s": 0.1})


plugin.prepare = _cached
'''


def test_without_the_handoff_the_session_prepares_and_times_its_kernel(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(CACHED)
    run_dir, proc = plugin_run(tmp_path, 'def test_uses_the_kernel(kernel):\n    assert kernel.build.release\n')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((run_dir / "timings.json").read_text())["prepare"]["kernel_s"] == 0.02
