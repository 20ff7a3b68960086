"""Fixtures the harness's own tests share."""

import subprocess
from pathlib import Path

import pytest

from harness import paths

# These suites are run by tests/test_faults.py and tests/test_driver_faults.py inside `harness run`
# with fault modules loaded, where their faults are the point: never collected directly.
collect_ignore = ["fault_suite", "driver_fault_suite"]


@pytest.fixture(scope="session")
def server_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """guest/programs/cmdserver.c built with the guest's Makefile (its flags, -Werror and all), to run on the host."""
    out = tmp_path_factory.mktemp("cmdserver")
    subprocess.run(["make", "-s", "-C", str(paths.GUEST), f"O={out}", f"{out}/cmdserver"], check=True)
    return out / "cmdserver"
