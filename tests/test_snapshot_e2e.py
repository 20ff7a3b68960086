"""A fresh guest in a fraction of a boot (harness/vm/snapshot.py, harness/vm/pool.py, harness/vm/port.py), on real
guests: the pool's first VM boots and is snapshotted; a fresh one is restored from that snapshot with nothing of
what a test did before, answers on its virtio-serial command port, connects SSH when a command needs it, and says
at once when its port server is killed under a command. The speed is `make bench`'s (restore_to_command_s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from harness import paths
from harness.kernel.prepare import Prepared, prepare
from harness.results.model import Timings
from harness.results.rundir import RunDir
from harness.vm import snapshot
from harness.vm.machine import guest_vm, load_profile
from harness.vm.pool import VMs
from harness.vm.ssh import PortServerStartedOver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare()


@pytest.fixture(scope="module")
def pool(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VMs]:
    vms = VMs(prepared, "default", RunDir.make(tmp_path_factory.mktemp("run")), None)
    vms.get()  # the first boot, and its snapshot, whichever test of the module this worker runs first
    yield vms
    vms.close()


def _boot_id(vm) -> str:
    return vm.ssh.run(["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()


def test_a_fresh_guest_is_the_first_boots_snapshot_with_nothing_of_the_test_before(pool: VMs):
    timings = pool.run_dir.timings
    restores = len(timings.restores)
    first = pool.get()  # the first boot's guest, or (after another test of this module) a restore's
    assert first.ssh and pool.snapshot is not None and len(timings.boots) == 1
    swappiness = first.ssh.run(["cat", "/proc/sys/vm/swappiness"], check=True).stdout.strip()
    first.ssh.run(["sh", "-c", "echo 77 > /proc/sys/vm/swappiness && touch /tmp/left-behind"], check=True)

    fresh = pool.get("a test that changes global state")
    assert fresh.ssh and fresh is not first and not first.alive()
    assert fresh.restored_from == pool.snapshot.name
    assert not fresh.ssh.run(["test", "-e", "/tmp/left-behind"]).ok
    assert fresh.ssh.run(["cat", "/proc/sys/vm/swappiness"], check=True).stdout.strip() == swappiness
    # the boot the snapshot was taken of, gone on (a boot draws a new random boot_id)
    assert _boot_id(fresh) == json.loads((pool.snapshot / snapshot.META).read_text())["boot_id"]
    # ... with the host's time, which stood still in the file (set to the second)
    assert abs(int(fresh.ssh.run(["date", "+%s"], check=True).stdout) - time.time()) < 3
    # its boot is the snapshot's: the boot's console kept beside its own, the boot's dmesg in the guest
    assert "HARNESS-READY" in (fresh.workdir / snapshot.BOOT_CONSOLE).read_text()
    assert "Linux version" in fresh.ssh.run(["dmesg"], check=True).stdout
    assert fresh.ssh.run(["true"]).guest_s is not None  # on the port's server

    assert pool.get("a test that changes global state") is fresh  # its group shares it
    after = pool.get()  # ... and leaves it to no test outside the group
    assert after is not fresh and after.restored_from == pool.snapshot.name
    assert pool.get() is after  # tests of no group share a guest
    assert len(timings.boots) == 1 and [r.snapshot for r in timings.restores[restores:]] == [pool.snapshot.name] * 2


def test_a_restored_guest_connects_ssh_when_a_command_needs_it(pool: VMs):
    vm = pool.get("ssh")
    assert vm.restored_from and vm.ssh and vm.ssh.client is None  # no session until one is needed
    result = vm.ssh.run(["echo", "over ssh"], own_channel=True)
    assert result.stdout == "over ssh\n" and result.guest_s is None  # dropbear's channel, the host key pinned
    assert vm.ssh.client is not None
    assert "connecting (the port server is busy or gone) before: echo 'over ssh'" in \
        (vm.workdir / "commands.log").read_text()


def test_the_port_server_killed_under_a_command_says_so_at_once_and_the_port_goes_on(pool: VMs):
    vm = pool.get("port")
    assert vm.ssh
    errors: list[BaseException] = []

    def long() -> None:
        try:
            vm.ssh.run(["sleep", "30"], timeout=60)  # type: ignore[union-attr]
        except BaseException as e:  # what it raised is the point
            errors.append(e)

    worker = threading.Thread(target=long)
    worker.start()
    deadline = time.monotonic() + 60
    while not vm.ssh.run(["pidof", "sleep"], own_channel=True).ok:
        assert time.monotonic() < deadline and worker.is_alive(), f"sleep 30 never started: {errors}"
        time.sleep(0.2)
    server = vm.ssh.run(["sh", "-c", "for p in $(pidof cmdserver); do case $(readlink /proc/$p/fd/0) in "
                                     "/dev/vport*) echo $p;; esac; done"], own_channel=True, check=True).stdout.split()
    assert len(server) == 1, server
    started = time.monotonic()
    vm.ssh.run(["kill", "-KILL", *server], own_channel=True, check=True)
    worker.join(40)
    # said when /init's loop started another server (its hello), not at the 60 s timeout; a guest port closed
    # by its reader never shows on the host's socket (QEMU keeps the chardev), so without that hello it would
    assert len(errors) == 1 and type(errors[0]) is PortServerStartedOver, errors
    assert "sleep 30" in str(errors[0]) and "outcome is unknown" in str(errors[0])
    assert time.monotonic() - started < 20
    after = vm.ssh.run(["echo", "again"], check=True)
    assert after.stdout == "again\n" and after.guest_s is not None and vm.ssh.port and vm.ssh.port.usable()
    vm.ssh.run(["sh", "-c", "kill $(pidof sleep) 2>/dev/null; true"])


def test_a_snapshot_qemu_cannot_load_is_dropped_and_the_guest_boots_instead(pool: VMs, prepared: Prepared,
                                                                         tmp_path: Path):
    assert pool.snapshot
    broken = tmp_path / "broken"
    shutil.copytree(pool.snapshot, broken)
    state = broken / snapshot.STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    vm = guest_vm(prepared, load_profile("default"), tmp_path / "vm", pool.accel)
    why = snapshot.restore_or_none(vm, broken, timeout=60)
    assert why and why.startswith(f"restore from {broken} failed, so the guest boots instead: ")
    assert not broken.exists() and not vm.alive()


SUITE = '''
import pytest


def test_leaves_a_mark(guest):
    guest.run(["touch", "/tmp/mark"], check=True)


def test_shares_the_guest(guest):
    assert guest.run(["test", "-e", "/tmp/mark"]).ok, "no mark: a fresh guest"


@pytest.mark.fresh_guest
def test_fresh(guest):
    assert not guest.run(["test", "-e", "/tmp/mark"]).ok, "the mark of another test"
    guest.run(["touch", "/tmp/mark"], check=True)


def test_after_the_fresh_one(guest):
    assert not guest.run(["test", "-e", "/tmp/mark"]).ok, "the mark of a test that keeps its guest to itself"
'''

MODULE = '''
import pytest

pytestmark = pytest.mark.fresh_guest(scope="module")


def test_module_leaves_a_mark(guest):
    assert not guest.run(["test", "-e", "/tmp/mark"]).ok, "the mark of a test outside this module"
    guest.run(["touch", "/tmp/module-mark"], check=True)


def test_module_shares_its_guest(guest):
    assert guest.run(["test", "-e", "/tmp/module-mark"]).ok, "no mark: a guest of its own"
'''


@pytest.mark.parametrize("flag, shares, restores", [("", "PASSED", 3), ("--fresh-guest", "FAILED", 5)])
def test_the_marker_and_the_flag_give_a_test_a_fresh_guest(tmp_path: Path, flag: str, shares: str,
                                                           restores: int):
    (tmp_path / "test_marks.py").write_text(SUITE)
    (tmp_path / "test_module.py").write_text(MODULE)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--reruns=0", f"--results-dir={results}", *filter(None, [flag]), str(tmp_path)],
                          capture_output=True, text=True, cwd=paths.REPO, timeout=600)
    cases = ElementTree.parse(next(results.rglob("junit.xml"))).getroot().iter("testcase")
    outcomes = {c.get("name"): "FAILED" if c.find("failure") is not None else "PASSED" for c in cases}
    assert outcomes == {"test_leaves_a_mark": "PASSED", "test_shares_the_guest": shares, "test_fresh": "PASSED",
                        "test_after_the_fresh_one": "PASSED", "test_module_leaves_a_mark": "PASSED",
                        "test_module_shares_its_guest": shares}, \
        proc.stdout[-3000:]
    (timings_json,) = results.rglob("timings.json")
    timings = Timings.read(timings_json)
    # one boot (every run proves its kernel boots), then restores: for test_fresh, the test after it and the module;
    # with the flag, for every test after the first
    assert (len(timings.boots), len(timings.restores)) == (1, restores), timings
