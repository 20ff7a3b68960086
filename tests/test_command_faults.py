"""One fault path for every command (issue 18): a real fault done to the guest of `harness trace`,
`shell -c`, `evidence` and `bench` while it works ends the command within its timeout, with exit
status 2 and one paragraph naming the cause and the console log; no traceback, no QEMU, no open port.
(`harness run` is tests/test_faults.py: the same classification, through the pytest plugin.)

The faults come from outside, as they would: QEMU killed with SIGKILL; a guest panic (sysrq `c`,
written over an SSH session of our own to the command's guest, with the image's pinned host key);
a hung guest (QEMU stopped with SIGSTOP: nothing runs, nothing answers, no console output).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import paths
from harness.kernel.image import client_key
from harness.vm.ssh import SSH, SSHError
from tests.test_boot_faults import qemu_pids

pytestmark = pytest.mark.e2e
BUSYBOX = "/bin/busybox"  # static (busybox-static): a program `harness trace` can run in the guest


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _port(argv: list[str]) -> int:
    m = re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-", " ".join(argv))
    assert m, argv
    return int(m[1])


def _session(pid: int, timeout: float = 120) -> SSH:
    """Our own SSH session to the guest of QEMU `pid` (its image's host key pinned, the harness's key)."""
    argv = _argv(pid)
    host_key = Path(argv[argv.index("-initrd") + 1]).parent / "host_key.pub"
    return SSH.connect(_port(argv), host_key, client_key(), timeout=timeout)


def _new_qemu(before: set[int], proc: subprocess.Popen[str], nth: int = 1, timeout: float = 900) -> int:
    """The nth QEMU the command started (the kernel may be built first: a long timeout)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the command ended before its guest #{nth} started: {proc.communicate()}"
        for pid in sorted(qemu_pids() - before):
            try:
                guest = "-kernel" in _argv(pid)  # not `qemu -device help` (machine.check_devices)
            except OSError:
                continue
            if guest and pid not in seen:
                seen.append(pid)
        if len(seen) >= nth:
            return seen[nth - 1]
        time.sleep(0.2)
    raise AssertionError(f"no QEMU #{nth} within {timeout} s")


def _wait_for_workload(pid: int, pattern: str) -> None:
    """Until the guest runs the command's workload (ps shows `pattern`)."""
    ssh = _session(pid)
    try:
        deadline = time.monotonic() + 120
        while pattern not in ssh.run(["ps"], timeout=10).stdout:
            assert time.monotonic() < deadline, f"{pattern!r} never ran in the guest"
            time.sleep(0.5)
    finally:
        ssh.close()


def _panic(pid: int) -> None:
    ssh = _session(pid)
    try:
        ssh.run(["sh", "-c", "echo c > /proc/sysrq-trigger"], timeout=10)
    except SSHError:
        pass  # the guest died under the command: that is the point
    finally:
        ssh.close()


FAULTS: dict[str, tuple[Callable[[int], None], str]] = {
    "kill": (lambda pid: os.kill(pid, signal.SIGKILL), r"CRASH: QEMU died \(killed by SIGKILL\)"),
    "panic": (_panic, r"CRASH: kernel crashed: kernel panic"),
    "hang": (lambda pid: os.kill(pid, signal.SIGSTOP), r"TIMEOUT: "),
}

# command: (arguments, what shows in the guest's ps once it works, or "" to fault it right after SSH answers)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "trace": (["trace", "--timeout=20", "--", BUSYBOX, "sleep", "600"], "sleep 600"),
    "shell": (["shell", "--timeout=20", "-c", "sleep 600"], "sleep 600"),
    "evidence": (["evidence", "--repeats=50", "--no-hmm"], ""),
}
# Which pairs make sense: a hung guest under `evidence` waits out its workloads' own 600 s timeout.
PAIRS = [(c, f) for c in COMMANDS for f in FAULTS if (c, f) != ("evidence", "hang")]


def _run(tmp_path: Path, command: list[str], inject: Callable[[subprocess.Popen[str], set[int]], int],
         expected: str, limit: float) -> tuple[str, str]:
    before = qemu_pids()
    results = tmp_path / "results"
    if command[0] in ("evidence", "bench"):
        command = [*command, f"--results-dir={results}"]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *command], cwd=paths.REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        port = inject(proc, before)  # the faulted guest's forwarded port
        injected = time.monotonic()
        out, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - injected
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    assert re.search(rf"^harness: {expected}", err, re.MULTILINE), err[-3000:]
    assert "console log: " in err and "Traceback" not in err and "launcher failed" not in err, err[-3000:]
    log = Path(re.search(r"console log: (\S+)", err)[1])  # type: ignore[index]
    assert log.exists() and log.stat().st_size > 0
    assert not qemu_pids() - before, "QEMU left behind"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the faulted guest's forwarded port is still open"
    if expected.startswith("CRASH"):
        # a dead guest is seen at once: no reconnect to it is tried (15 s of connect timeout), and the command is
        # not waited out (trace's and shell's --timeout=20). The bound holds the run's teardown as well (a
        # panic's vmcore, QEMU's exit) on a host building a kernel; the log is the direct proof.
        commands = log.with_name("commands.log")
        assert "reconnecting" not in (commands.read_text() if commands.exists() else ""), commands
        assert took < 20, f"{command[0]} took {took:.0f} s to see a dead guest"
    print(f"{command[0]}: ended {took:.1f} s after the fault; {err.strip().splitlines()[-2]}")
    return out, err


@pytest.mark.parametrize(("command", "fault"), PAIRS, ids=[f"{c}-{f}" for c, f in PAIRS])
def test_a_fault_under_a_command_is_named_and_ends_it(tmp_path: Path, command: str, fault: str):
    args, workload = COMMANDS[command]
    action, expected = FAULTS[fault]

    def inject(proc: subprocess.Popen[str], before: set[int]) -> int:
        pid = _new_qemu(before, proc)
        if workload:
            _wait_for_workload(pid, workload)
        else:
            _session(pid).close()  # SSH answers: the command is at work, or about to be
            time.sleep(3)
        port = _port(_argv(pid))  # before the fault: a QEMU that died has no command line left
        action(pid)
        return port

    # A hang is found by the command's own 20 s timeout, then the post-mortem (QMP on a stopped QEMU: 5 s)
    # and the stop (SIGTERM, then SIGKILL after 5 s); a crash at once.
    _run(tmp_path, args, inject, expected, limit=90)


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_a_fault_while_bench_boots_its_second_guest(tmp_path: Path, fault: str):
    action, _ = FAULTS[fault]
    expected = {"kill": r"CRASH: QEMU died \(killed by SIGKILL\) while booting",
                "hang": r"TIMEOUT: console silent for 60 s during boot"}[fault]

    def inject(proc: subprocess.Popen[str], before: set[int]) -> int:
        pid = _new_qemu(before, proc, nth=2)
        log = tmp_path / "results" / "vm-2" / "console.log"
        deadline = time.monotonic() + 60
        while not (log.exists() and log.stat().st_size > 0):  # mid-boot: the kernel has started printing
            assert time.monotonic() < deadline, "the second guest printed nothing"
            time.sleep(0.05)
        port = _port(_argv(pid))  # before the fault: a QEMU that died has no command line left
        action(pid)
        return port

    _run(tmp_path, ["bench", "--boots=3"], inject, expected, limit=150)
    assert not list((tmp_path / "results").rglob("bench.json")), "a bench whose guest died wrote figures"


def test_trace_exits_with_the_programs_status_and_runs_a_dynamic_program(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trace", "--json", "--", BUSYBOX, "sh", "-c",
                           "exit 7"], cwd=paths.REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 7, proc.stderr
    assert json.loads(proc.stdout)["exit_status"] == 7
    # /bin/ls needs libselinux, libpcre2 and libc: copied in at the paths the host's loader resolves
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trace", "--json", "--", "/bin/ls", "/guest"],
                          cwd=paths.REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "bin" in doc["stdout"].split() and doc["events"][-1]["event"] == "RELEASE", doc
