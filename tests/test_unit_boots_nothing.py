"""`make unit` sets HARNESS_NO_QEMU: a test that would boot a guest without its e2e mark fails at once,
with a message saying why, instead of booting (or waiting on a kernel build and a boot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.vm.console import Console


def test_no_qemu_is_started_when_the_environment_forbids_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_NO_QEMU", "1")
    # `true` stands for QEMU: were the guard gone, this test would fail without leaving a VM behind.
    with pytest.raises(RuntimeError, match=r"HARNESS_NO_QEMU is set: refusing to start true \(mark the test e2e\)"):
        Console(["true"], tmp_path / "console.log")
    assert not (tmp_path / "console.log").exists(), "refused before anything was opened or spawned"
