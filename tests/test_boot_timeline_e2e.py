"""The boot timeline of real boots: every stage seen, in order, and a boot that hangs says where.
Real kernel, real QEMU: each case boots the default kernel."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from harness.kernel.image import build_bare_image
from harness.kernel.prepare import Prepared, prepare
from harness.vm import machine
from harness.vm.bench import boot_bare
from harness.vm.machine import VM, BootError, load_profile
from harness.vm.ssh import SSH
from harness.vm.timeline import STAGES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare(None)


def test_a_boot_reaches_every_stage_in_order(prepared: Prepared, tmp_path: Path):
    modules = ("harness.modules=mmu_probe",) if prepared.build.has("MMU_NOTIFIER") else ()
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path, extra_append=modules)
    try:
        vm.start(boot_timeout=180)
        timeline = vm.timeline
    finally:
        vm.stop()
    assert timeline.problems() == [], timeline.to_json()
    assert list(timeline.at) == list(STAGES)  # every stage, none else
    assert timeline.at["sshd"] < timeline.at["ssh"]  # the session comes only after dropbear listens
    # The guest's clock runs on from stage to stage as well (it cannot see QEMU's start, so no more than that).
    uptimes = [timeline.guest_uptime[s] for s in ("init", "modules", "net", "sshd", "command")]
    assert uptimes == sorted(uptimes), timeline.guest_uptime
    # boot_s is QEMU start to the authenticated session (one QEMU start here: no port race to add)
    assert timeline.at["ssh"] <= vm.boot_s < timeline.at["command"] + 1.0


def test_a_boot_that_hangs_in_a_module_says_it_got_to_init(prepared: Prepared, tmp_path: Path):
    # fault_stall sleeps in its module init: /init started, and never reported its modules loaded.
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path,
            extra_append=("harness.modules=fault_stall",))
    with pytest.raises(BootError) as caught:
        vm.start(boot_timeout=180, silence_timeout=20)
    vm.stop()
    reason = caught.value.reason
    assert reason.startswith("console silent for 20 s during boot (last stage reached: init (at "), reason
    assert "fault_stall: stalling boot on purpose" in vm.console_log.read_text()


def test_a_bare_boot_reaches_its_init_and_powers_off(prepared: Prepared, tmp_path: Path):
    initramfs = build_bare_image(prepared.build.arch)
    bare = boot_bare(load_profile("default"), prepared.build.kernel_image, initramfs, tmp_path, "tcg")
    assert 0 < bare.kernel_s < bare.init_s <= bare.exit_s, bare
    log = (tmp_path / "console.log").read_text()
    assert "HARNESS-BARE init" in log
    assert "reboot: Power down" in log  # it powered off, rather than QEMU being stopped


def test_a_qemu_that_dies_as_ssh_connects_is_a_crash_not_unreachable(prepared: Prepared, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    # QEMU is SIGKILLed right when the harness starts its SSH connect (sshd was listening): the connect
    # fails for real, and the boot must say QEMU died there, not that SSH was unreachable.
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path)
    connect = SSH.connect

    def killed_first(*args, **kwargs):
        assert vm.console
        os.kill(vm.console.pid, signal.SIGKILL)
        return connect(*args, **kwargs)

    monkeypatch.setattr(machine.SSH, "connect", killed_first)
    with pytest.raises(BootError) as caught:
        vm.start(boot_timeout=180, ssh_timeout=5)
    vm.stop()
    assert caught.value.outcome.value == "CRASH", caught.value.reason
    assert caught.value.reason.startswith("QEMU died (killed by SIGKILL) while booting (last stage reached: sshd"), \
        caught.value.reason
