"""timings.json of a run whose kernel was built before pytest started (by `harness run` itself): the
build's seconds come in through --prepared-timings, and the session's own cache lookup adds to them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_results_model import plugin_run

# The session's prepare() finds the kernel cached, as it does after `harness run` built it: near-zero figures
CONFTEST = '''
import types
from pathlib import Path

import harness.pytest_plugin as plugin


def _cached(kernel_src, notifier, settings=(), fragments=()):
    here = Path(__file__).parent
    (here / ".config").write_text("CONFIG_MMU_NOTIFIER=y\\n")
    build = types.SimpleNamespace(config=here / ".config", dir=here, release="6.12.117")
    tree = types.SimpleNamespace(path=here, version="6.12.117", identity="test")
    return types.SimpleNamespace(tree=tree, build=build, image=types.SimpleNamespace(dir=here), notifier=notifier,
                                 fragments=fragments,
                                 timings={"source_s": 0.01, "config_s": 0.0, "kernel_s": 0.02, "image_s": 0.1})


plugin.prepare = _cached
'''

SUITE = '''
def test_uses_the_kernel(kernel):
    assert kernel.build.release == "6.12.117"
'''


def test_the_build_before_pytest_is_in_timings_json(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    built = {"source_s": 0.5, "config_s": 3.25, "kernel_s": 512.4, "image_s": 4.0}
    run_dir, proc = plugin_run(tmp_path, SUITE, f"--prepared-timings={json.dumps(built)}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prepare = json.loads((run_dir / "timings.json").read_text())["prepare"]
    assert prepare == {"source_s": 0.51, "config_s": 3.25, "kernel_s": 512.42, "image_s": 4.1}


def test_without_an_earlier_build_the_sessions_own_figures(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    run_dir, proc = plugin_run(tmp_path, SUITE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((run_dir / "timings.json").read_text())["prepare"]["kernel_s"] == 0.02
