"""A real guest that sends more than the host takes (harness/vm/limits.py) ends in the FLOOD outcome, with a clear
message and the console log, while the host's memory stays bounded: a command that writes without end (over
the command server and over an exec channel of its own), a console flooded from /dev/console and from
/dev/kmsg, a boot that floods its console, and the same through `harness run` (tests/fault_suite/test_flood.py).

The limits are small here so that TCG floods them in seconds: 4 MiB of output, 256 KiB of console log. The
host's memory is measured with tracemalloc (every Python allocation of this process, the console's reader
thread and paramiko's included), not with the wall clock or RSS alone.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.kernel.prepare import Prepared, prepare
from harness.results.outcome import GuestFlooded, Outcome
from harness.vm import faults, limits
from harness.vm.machine import VM, BootError, load_profile
from tests.test_faults import run_fault_suite

pytestmark = pytest.mark.e2e
MIB = 1 << 20
SMALL = replace(limits.load({}), output_bytes=4 * MIB, console_log_bytes=256 * 1024)
FLOOD_SUITE = Path(__file__).parent / "fault_suite" / "test_flood.py"


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare()


@pytest.fixture(scope="module")
def vm(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    machine = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path_factory.mktemp("vm"),
                 limits=SMALL)
    try:
        machine.start(boot_timeout=240)
        yield machine
    finally:
        machine.stop()


def _traced(work):  # type: ignore[no-untyped-def]
    """(what work() raised, the peak of the host's Python memory meanwhile)."""
    tracemalloc.start()
    try:
        try:
            work()
            raised = None
        except Exception as e:  # what the work raised is the result
            raised = e
        return raised, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _no_yes_left(vm: VM) -> bool:
    """The flooding command ended in the guest (its channel was closed under it)."""
    assert vm.ssh
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not re.search(r"\byes\b", vm.ssh.run(["ps", "-o", "comm"], check=True).stdout):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("own_channel", [False, True], ids=["command-server", "exec-channel"])
@pytest.mark.parametrize(("argv", "stream"), [(["yes"], "stdout"), (["sh", "-c", "yes >&2"], "stderr")],
                         ids=["stdout", "stderr"])
def test_a_command_that_writes_without_end_ends_as_flood(vm: VM, argv: list[str], stream: str, own_channel: bool):
    assert vm.ssh

    def work() -> None:
        with faults.guarded(vm, "flooding"):
            vm.ssh.run(argv, timeout=300, own_channel=own_channel)  # type: ignore[union-attr]

    raised, peak = _traced(work)
    assert isinstance(raised, GuestFlooded), repr(raised)
    assert raised.outcome == Outcome.FLOOD
    assert raised.reason.startswith(f"the guest flooded: the command's {stream} passed 4 MiB, starting b'y\\ny\\n"), \
        raised.reason
    assert raised.reason.endswith(f"while running: {' '.join(argv) if len(argv) == 1 else 'sh -c '}" +
                                  ("" if len(argv) == 1 else "'yes >&2'"))
    assert f"console log: {vm.console_log}" in str(raised)
    # The cap, paramiko's window of 2 MiB and a few frames: not the 4 x output of the reader before.
    print(f"{stream} flood over {'an exec channel' if own_channel else 'the server'}: peak {peak / MIB:.1f} MiB")
    assert peak < 3 * SMALL.output_bytes, f"{peak / MIB:.1f} MiB"
    assert vm.ssh.run(["true"]).ok, "the guest no longer answers after the flood"
    if own_channel:
        # dropbear leaves the command of a closed channel running (as after an exec channel's timeout): the guest's
        # to keep, never the host's to read; a flood's fault makes the pytest plugin replace the VM anyway.
        vm.ssh.run(["killall", "yes"])
    assert _no_yes_left(vm), "the flooding command still runs in the guest"


@pytest.mark.parametrize("source", ["console", "kmsg"])
def test_a_console_flood_ends_as_flood_with_the_log_cut_at_its_limit(prepared: Prepared, tmp_path: Path,
                                                                      source: str):
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path / "vm", limits=SMALL)
    line = f"flood from {source} " + "0123456789" * 6
    script = {
        "console": 'yes "$1" | head -c 600000 > /dev/console',
        # /dev/kmsg rate-limits what user space writes unless printk_devkmsg=on, which the guest's root may set
        "kmsg": 'echo on > /proc/sys/kernel/printk_devkmsg; i=0; while [ $i -lt 8000 ]; do echo "<4>$1 $i"; '
                'i=$((i + 1)); done > /dev/kmsg',
    }[source]
    try:
        vm.start(boot_timeout=240)
        assert vm.ssh and vm.console

        def work() -> None:
            with faults.guarded(vm, f"writing to /dev/{source}"):
                vm.ssh.run(["sh", "-c", script, "flood", line], timeout=300, check=True)  # type: ignore[union-attr]
                deadline = time.monotonic() + 120
                while not vm.console.flooded and time.monotonic() < deadline:  # type: ignore[union-attr]
                    time.sleep(0.2)  # the console drains at the UART's pace, after the command

        raised, peak = _traced(work)
    finally:
        vm.stop()
    assert isinstance(raised, GuestFlooded), repr(raised)
    assert raised.reason == (f"the guest flooded the console: it printed more than 256 KiB (the log stops there; "
                             f"HARNESS_LIMIT_CONSOLE_LOG_BYTES raises the limit) while writing to /dev/{source}")
    log = vm.console_log.read_bytes()
    assert len(log) == SMALL.console_log_bytes + len(f"\n[harness: {vm.console.flooded}]\n")
    assert log.endswith(f"[harness: {vm.console.flooded}]\n".encode()) and line.encode() in log
    assert len(vm.console.text) <= SMALL.console_memory_bytes + 65536
    print(f"/dev/{source} flood: {vm.console.offset()} characters read, peak {peak / MIB:.1f} MiB")
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB"


def test_a_boot_that_floods_its_console_fails_as_flood(prepared: Prepared, tmp_path: Path):
    """initcall_debug (with ignore_loglevel, its lines being debug ones) prints two lines for each of the kernel's
    initcalls: 55 KB of boot where a plain one prints 15 KB, more than a log of 32 KiB takes (a limit below what
    limits.load() accepts from a user, given here as an object)."""
    tight = replace(SMALL, console_log_bytes=32 * 1024)
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path / "vm", limits=tight,
            extra_append=("initcall_debug", "ignore_loglevel"))
    try:
        with pytest.raises(BootError) as e:
            vm.start(boot_timeout=240)
    finally:
        vm.stop()
    assert e.value.outcome == Outcome.FLOOD
    assert e.value.reason.startswith("the guest flooded the console: it printed more than 32 KiB"), e.value.reason
    assert "while booting (last stage reached:" in e.value.reason
    assert vm.console_log.stat().st_size < 32 * 1024 + 300


def test_through_harness_run_every_flood_ends_as_flood_and_the_next_test_gets_a_guest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_LIMIT_OUTPUT_BYTES", "4M")
    monkeypatch.setenv("HARNESS_LIMIT_CONSOLE_LOG_BYTES", "256K")
    results, _ = run_fault_suite(tmp_path, FLOOD_SUITE)
    reason = {name: r["reason"] for name, r in results.items()}
    assert reason["test_command_floods_its_stdout"].startswith(
        "the guest flooded: the command's stdout passed 4 MiB, starting b'y\\ny\\n"), reason
    assert reason["test_console_floods"].startswith(
        "the guest flooded the console: it printed more than 256 KiB"), reason
