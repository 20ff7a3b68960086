"""The VMs of a test session: one per machine profile, booted on first need and snapshotted right then, replaced
by a restore of that snapshot when a test left it dead, crashed or suspect, or when the isolation group changes
(`fresh_guest`). The pytest plugin's `vms` fixture holds the pools; harness/guest.py uses them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.kernel.prepare import Prepared
from harness.results.model import Boot, Restore
from harness.results.rundir import RunDir
from harness.vm import qmp, snapshot
from harness.vm.machine import VM, BootError, MachineError, accel_for, guest_vm, load_profile, probe_modules
from harness.vm.ssh import SSHError

# Defaults for TCG on 2 cores, where this kernel boots in ~2 s; scaled up for debug kernels.
DEFAULT_BOOT_TIMEOUT = 120.0
DEFAULT_TEST_TIMEOUT = 300.0
DEBUG_OPTIONS = ("KASAN", "PROVE_LOCKING", "KCSAN", "DEBUG_KMEMLEAK", "KMSAN")


def timeout_scale(prepared: Prepared, accel: str) -> float:
    """Debug kernels (KASAN, lockdep, ...) run several times slower; KVM much faster than TCG."""
    scale = 3.0 if any(prepared.build.has(opt) for opt in DEBUG_OPTIONS) else 1.0
    return scale * (0.5 if accel == "kvm" else 1.0)


def isolation(nodeid: str, scope: str | None, every_test: bool = False) -> str | None:
    """A test's isolation group (VMs.get): itself with --fresh-guest (`every_test`) or `fresh_guest` (scope "test"),
    its module with `fresh_guest(scope="module")` (tests that share a setup, such as a module loaded, and leave
    no one else's guest changed), none without the marker (`scope` None)."""
    if every_test or scope == "test":
        return nodeid
    if scope == "module":
        return nodeid.split("::")[0]
    if scope is None:
        return None
    raise MachineError(f"{nodeid}: fresh_guest's scope is 'test' or 'module', not {scope!r}")


class VMs:
    """Boots a VM on first need and replaces it when a test left it dead, crashed or suspect."""

    def __init__(self, prepared: Prepared, machine: str, run_dir: RunDir, boot_timeout: float | None,
                 extra_modules: str = "", worker: str = "", gdb_on_crash: bool = False):
        self.prepared = prepared
        self.gdb_on_crash = gdb_on_crash  # each VM with gdb's stub, and held in a panic (panic=0) for gdb
        self.worker = worker  # xdist's worker id: its VMs are vm-gw0-1, ..., apart from another worker's
        self.profile = load_profile(machine, prepared.build.arch.name)
        self.run_dir = run_dir
        self.modules = (*probe_modules(prepared), *filter(None, extra_modules.split(",")))
        self.accel = accel_for(prepared)
        self.scale = timeout_scale(prepared, self.accel)
        self.boot_timeout = boot_timeout or DEFAULT_BOOT_TIMEOUT * self.scale
        self.vm: VM | None = None
        self.served = 0  # tests the VM was handed to
        self.isolation: str | None = None  # the isolation group of the last of them
        self.boots = 0  # VMs started, booted or restored (their folders: vm-1, vm-2, ...)
        self.snapshots = self.profile.snapshots  # take one after the first boot and restore it (off: VMs boot)
        self.snapshot: Path | None = None
        self.boot_error: BootError | None = None

    def get(self, isolation: str | None = None) -> VM:
        """The pool's VM for one more test. Tests of an isolation group (a test marked fresh_guest, or a module
        marked so as a whole: harness/pytest_plugin.py) get a guest no test outside the group used, and leave
        theirs to no test outside it: whenever the group changes, the VM is replaced by a restore from the
        snapshot of this pool's first boot (harness/vm/snapshot.py). Tests of no group share a VM."""
        if self.boot_error:
            raise self.boot_error  # a kernel that cannot boot will not boot for the next test either
        if self.vm and (not self.vm.alive() or (self.served and isolation != self.isolation)):
            self.discard()
        if self.vm is None:
            self.vm = self._restored() or self._booted()
            self.served = 0
        self.served += 1
        self.isolation = isolation
        return self.vm

    def _new_vm(self) -> VM:
        self.boots += 1
        vm = guest_vm(self.prepared, self.profile, self.run_dir.vm_dir(self.boots, self.worker), self.accel,
                      self.modules)
        if self.gdb_on_crash:
            vm.gdb, vm.extra_append = True, (*vm.extra_append, "panic=0")
        return vm

    def _booted(self) -> VM:
        """A boot, the pool's first (each run proves its kernel boots) or when no snapshot serves; its snapshot
        is taken before any test touches it."""
        vm = self._new_vm()
        try:
            vm.start(self.boot_timeout)
        except BootError as e:
            self.boot_error = e
            raise
        self.run_dir.timings.boots.append(Boot(self.boots, round(vm.boot_s, 2), self.accel, self.boot_timeout,
                                                timeline=vm.timeline.to_json()))
        if self.snapshots and self.snapshot is None:
            try:
                self.snapshot = snapshot.ensure(vm)
            except (qmp.QMPError, OSError, SSHError) as e:  # a guest gone at once is the next get()'s to see
                self.snapshots = False
                vm.note(f"no snapshot of this guest ({e}): a fresh guest is a boot")
        return vm

    def _restored(self) -> VM | None:
        if self.snapshot is None:
            return None
        vm = self._new_vm()
        failed = snapshot.restore_or_none(vm, self.snapshot, self.boot_timeout)
        if failed:
            vm.note(failed)
            self.snapshot, self.snapshots = None, False
            return None
        self.run_dir.timings.restores.append(Restore(self.boots, round(vm.boot_s, 3), self.snapshot.name))
        return vm

    def discard(self) -> None:
        # Forget the VM before stopping it: the watchdog thread discards while the test it stopped may
        # already be over, and the next test's get() must not be handed a VM whose SSH is closing.
        vm, self.vm = self.vm, None
        if vm:
            vm.stop()

    def close(self) -> None:
        self.discard()


class Pools:
    """One VMs pool per machine profile: the session's (--machine) and any a test names with
    @pytest.mark.machine("numa2"); each other profile keeps its vm-N directories under <run>/<profile>/."""

    def __init__(self, prepared: Prepared, run_dir: RunDir, default: str, boot_timeout: float | None = None,
                 extra_modules: str = "", worker: str = "", gdb_on_crash: bool = False):
        self.prepared, self.run_dir, self.default = prepared, run_dir, default
        self.boot_timeout, self.extra_modules, self.worker = boot_timeout, extra_modules, worker
        self.gdb_on_crash = gdb_on_crash
        self.pools: dict[str, VMs] = {}

    def pool(self, machine: str | None = None) -> VMs:
        machine = machine or self.default
        if machine not in self.pools:
            root = self.run_dir if machine == self.default else RunDir.make(self.run_dir.root / machine)
            self.pools[machine] = VMs(self.prepared, machine, root, self.boot_timeout, self.extra_modules,
                                      self.worker, self.gdb_on_crash)
        return self.pools[machine]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        # Another profile's boots were recorded in its own RunDir: timings.json has them too, by profile.
        for machine, pool in self.pools.items():
            if pool.run_dir is not self.run_dir:
                self.run_dir.timings.boots += [replace(b, machine=machine) for b in pool.run_dir.timings.boots]
                self.run_dir.timings.restores += [replace(r, machine=machine) for r in pool.run_dir.timings.restores]


