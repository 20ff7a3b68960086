"""Snapshots of a ready guest: taken once after a boot, restored in a fraction of one (a fresh guest per test).

A snapshot is QEMU's migration stream of a guest that reached its ready marker (modules loaded, dropbear
listening, the command server on its virtio-serial port) and answered its first command, written to a file
in the cache: QMP `migrate` to a file descriptor the harness opened and handed over with `getfd`, so QEMU
runs no shell and opens no path of its own. A restore starts QEMU with the same command line plus
`-incoming fd:N` (the file, opened read-only); the guest goes on from the moment it was stopped. Its SSH
session does not survive (it lived in the old QEMU's user network), and a new one costs a key exchange that
under TCG takes longer than the restore, so the first command goes over the virtio-serial port
(harness/vm/port.py): it sets the guest's clock to the host's, which stood still in the file. SSH connects
when a command first needs it (the port server busy with another).

Keyed by what the state depends on: the QEMU binary and its command line (ports, fd numbers and the VM's
own folder aside), and the contents of the kernel and the initramfs. What a restored guest shares with its
snapshot, by design: the boot's dmesg and console (boot-console.log beside its own), its random pool.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from harness import atomic, locks, paths
from harness.kernel.build import content_key
from harness.kernel.image import client_key
from harness.vm import qmp
from harness.vm.cmdserver import PortServer
from harness.vm.machine import VM, BootError, qemu_devices
from harness.vm.ssh import SSH, SSHError

STATE = "state"  # QEMU's migration stream
META = "snapshot.json"  # what it was taken from, and what it cost
BOOT_CONSOLE = "boot-console.log"  # the console of the boot it was taken after
TAKE_TIMEOUT_S = 60.0
KEPT = 16  # snapshots the cache keeps, the most recently used: about 90 MB each for 1 GiB (a bisection takes 8)


def root() -> Path:
    return paths.cache_root() / "snapshots"


def key(vm: VM) -> str:
    """The snapshot a booted `vm` gives and a restore of it needs (its argv as launched)."""
    argv = [_unplaced(arg, vm.workdir) for arg in vm.argv]
    return content_key(qemu_devices(argv[0])[0], json.dumps(argv), _file_hash(vm.kernel),
                       _file_hash(vm.image.initramfs))


def _unplaced(arg: str, workdir: Path) -> str:
    """An argument without what differs from one launch of the same guest to the next."""
    arg = re.sub(r"\b(fd[=:])\d+", r"\1N", arg)
    arg = re.sub(r"tcp:127\.0\.0\.1:\d+-", "tcp:127.0.0.1:PORT-", arg)
    return arg.replace(str(workdir), "VMDIR")


def _file_hash(path: Path) -> str:
    st = path.stat()
    return _hash(path, st.st_size, st.st_mtime_ns)


@functools.cache
def _hash(path: Path, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a rebuilt file is read again
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def ensure(vm: VM) -> Path:
    """The snapshot of `vm`, a guest just booted and untouched: taken now unless the cache has it (one taker
    at a time per key: parallel workers boot the same guest)."""
    where = root() / key(vm)
    if (where / STATE).exists():
        return where
    with locks.locked(root() / f"{where.name}.lock", "taking a guest snapshot"):
        if not (where / STATE).exists():
            take(vm, where)
            prune(keep=where)
    return where


def prune(keep: Path) -> None:
    """Drop all but the KEPT snapshots last used (META's time: restore() touches it), never `keep`. A restore
    that loses the race with this finds no state, and boots instead."""
    taken = sorted((d for d in root().iterdir() if (d / META).exists() and d != keep),
                   key=lambda d: (d / META).stat().st_mtime, reverse=True)
    for old in taken[KEPT - 1:]:
        shutil.rmtree(old, ignore_errors=True)  # its lock file stays: another process may hold it


def take(vm: VM, where: Path) -> None:
    """Stop the guest, write its state into `where` (whole or not at all), and let it go on."""
    assert vm.qmp_channel and vm.ssh
    started = time.monotonic()
    # Drawn once per boot (at its first read), so a guest restored from this snapshot has it and a boot does not
    boot_id = vm.ssh.run(["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()
    with atomic.staged_dir(where) as staged:
        fd = os.open(staged / STATE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            session = vm.qmp_channel.session()
            with session.lock:
                session.sock.settimeout(TAKE_TIMEOUT_S)
                try:
                    # Migrated running (QEMU stops it for the last pass), so that the state says "running" and a
                    # restore runs at once: a guest stopped first is restored paused, and would need a `cont`.
                    session.getfd("snapshot", fd)
                    session.execute("migrate", uri="fd:snapshot")
                    try:
                        _wait_migrated(session, time.monotonic() + TAKE_TIMEOUT_S)
                    finally:
                        session.execute("cont")  # the guest, stopped at the end, goes on
                finally:
                    session.sock.settimeout(session.timeout)
        finally:
            os.close(fd)
        shutil.copyfile(vm.console_log, staged / BOOT_CONSOLE)
        (staged / META).write_text(json.dumps({
            "release": vm.release, "boot_id": boot_id, "argv": vm.argv, "kernel": str(vm.kernel),
            "initramfs": str(vm.image.initramfs),
            "taken_from": str(vm.workdir), "take_s": round(time.monotonic() - started, 3),
            "bytes": (staged / STATE).stat().st_size, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))


def _wait_migrated(session: qmp.QMP, deadline: float) -> None:
    while True:
        status = session.execute("query-migrate")
        state = status.get("status") if isinstance(status, dict) else None
        if state == "completed":
            return
        if state in ("failed", "cancelled") or time.monotonic() > deadline:
            raise qmp.QMPError(f"snapshot not written: migration {state or 'status unknown'}: "
                               f"{status.get('error-desc', '') if isinstance(status, dict) else status}")
        time.sleep(0.01)


def restore(vm: VM, where: Path, timeout: float) -> None:
    """Start `vm` (not started before) from the snapshot in `where`: ready once its first command (setting the
    clock) was answered on the command port; BootError otherwise, with QEMU stopped."""
    vm.workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(where / BOOT_CONSOLE, vm.workdir / BOOT_CONSOLE)
    vm.release = json.loads((where / META).read_text())["release"]
    (where / META).touch()  # used now: prune() keeps it
    vm.restored_from = where.name
    started = time.monotonic()
    fd = os.open(where / STATE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        vm.launch(incoming_fd=fd)
    finally:
        os.close(fd)  # QEMU has its own copy
    assert vm.command_port
    log, limits = vm.workdir / "commands.log", vm.limits
    port, host_key = vm.ssh_port, vm.image.host_key_pub
    vm.ssh = SSH(None, log, reconnect=lambda: SSH.connect(port, host_key, client_key(), 15, log, limits),
                 limits=limits, port=PortServer(vm.command_port.ours, limits))
    vm.ssh.peer_alive = vm.alive
    try:
        # busybox date: whole seconds; the guest's CLOCK_MONOTONIC goes on from the snapshot, as it should
        vm.ssh.run(["date", "-u", "-s", f"@{time.time():.0f}"], timeout=timeout, check=True)
    except SSHError as e:
        raise vm.unanswered(e, "restoring", f"restored guest does not answer: {e}") from None
    vm.boot_s = time.monotonic() - started


def restore_or_none(vm: VM, where: Path, timeout: float) -> str | None:
    """restore(), or why it could not (the snapshot is then dropped, and the caller boots instead): a snapshot
    QEMU cannot load is a stale cache entry, not a verdict on the kernel."""
    try:
        restore(vm, where, timeout)
        return None
    except (BootError, OSError, KeyError, ValueError) as e:
        vm.stop()
        if vm.console and vm.console.fatal_splat():
            raise  # the kernel itself crashed after the restore: that is the kernel's
        shutil.rmtree(where, ignore_errors=True)
        return f"restore from {where} failed, so the guest boots instead: {e}"
