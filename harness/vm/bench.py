"""`harness bench`: the figures a change to the pipeline is compared against (bench.json).

Keys (times in seconds):
  kernel_build_s          how long the cached kernel's build took when it was built (from its stamp)
  kernel_build_ccache     ccache hits/misses of that build ("cold" means mostly misses)
  prepare_cached_s        source + config + build + image when everything is cached (the no-rebuild path)
  boot_to_ssh_s           QEMU start to an authenticated SSH session, over `boots` boots (median, min, max, n)
  boot_timeline_s         per stage of harness/vm/timeline.py (kernel, init, modules, net, sshd, ssh, command):
                          host seconds from QEMU start to that stage, median over the boots (min, max, n)
  boot_stage_s            per stage: seconds from the stage before it to that stage, median over the boots
                          (where a boot spends its time: "init" is the kernel from its first line to /init)
  bare_boot_s             the bare boot: the same kernel on the same QEMU command line (the profile's machine,
                          devices and kernel command line, no harness.modules) with an initramfs that holds only
                          /dev/console and a static /init (images/bare-init.c) that prints one line and powers
                          off; QEMU start to QEMU's exit, over `boots` boots run right after the SSH boots
                          (the same sitting)
  bare_timeline_s         the bare boot's kernel (first line), init (its line) and exit, medians (min, max, n)
  boot_to_ssh_ratio       boot_to_ssh_s median / bare_boot_s median (issue 19's target: <= 1.3)
  boot_cpu_s              CPU seconds QEMU used from its start to the authenticated SSH session (all its threads),
                          median over the boots (min, max, n); per stage in boot_timeline_cpu_s
  bare_cpu_s              the same for the bare boot, to QEMU's exit
  boot_to_ssh_cpu_ratio   boot_cpu_s median / bare_cpu_s median: the ratio above as work done rather than wall
                          clock, which a host loaded by other work stretches far less
  ssh_roundtrip_s         one `true` on the guest's command server, the one on its virtio-serial port (the path
                          every command tries first): median, p95, min, max of `roundtrips` runs
  ssh_exec_roundtrip_s    the same `true` on an SSH exec channel of its own (dropbear's `sh -c`, the path before
                          the command server), measured alternately with the one above, in the same sitting
  ssh_guest_s             of ssh_roundtrip_s, the part inside the guest: the server's fork+exec to the reaped exit
  snapshot_take_s         the snapshot of the first boot's guest (harness/vm/snapshot.py): QMP migrate to a file
  snapshot_bytes          its size
  restore_to_command_s    QEMU start (-incoming from that snapshot) to the restored guest's first command answered
                          (the clock set, over the virtio-serial command port), over `restores` restores run right
                          after the SSH boots (median, p95, min, max, n)
  restore_to_boot_ratio   restore_to_command_s median / boot_to_ssh_s median (the target: <= 0.15, and
                          at most 0.3 s)
  accel                   tcg or kvm, as probed
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.kernel.arch import HOST
from harness.kernel.image import build_bare_image
from harness.kernel.prepare import Prepared, prepare
from harness.results.outcome import HarnessFault
from harness.vm import faults, snapshot
from harness.vm.console import Console
from harness.vm.machine import (
    VM,
    BootError,
    Profile,
    accel_for,
    free_port,
    guest_vm,
    load_profile,
    probe_modules,
    qemu_argv,
)
from harness.vm.ssh import SSH
from harness.vm.timeline import STAGES, Timeline


def spread(values: list[float]) -> dict[str, float]:
    """median, p95 (nearest rank: the smallest value at least 95% of them do not exceed), min, max, n."""
    ranked = sorted(values)
    p95 = ranked[math.ceil(0.95 * len(ranked)) - 1]
    return {"median": round(statistics.median(values), 4), "p95": round(p95, 4), "min": round(ranked[0], 4),
            "max": round(ranked[-1], 4), "n": len(values)}


def measure_roundtrips(ssh: SSH, n: int) -> dict[str, list[float]]:
    """`true` n times over the command server and n times over an exec channel of its own, alternately, so
    that both see the same host load; and the server's own measure of the command in the guest."""
    ssh.run(["true"], check=True)  # the server started: its start is not a round trip
    times: dict[str, list[float]] = {"server": [], "exec": [], "guest": []}
    for _ in range(n):
        served = ssh.run(["true"], check=True)
        if served.guest_s is None:  # not a fault of the machine: an image without the server
            raise RuntimeError("the guest has no command server (guest/programs/cmdserver.c): nothing to measure")
        times["server"].append(served.duration_s)
        times["guest"].append(served.guest_s)
        times["exec"].append(ssh.run(["true"], check=True, own_channel=True).duration_s)
    return times


def stage_spreads(timelines: list[Timeline], cpu: bool = False) -> dict[str, dict[str, float]]:
    """Per stage, its time from QEMU start (or QEMU's CPU seconds then) over the boots that reached it."""
    return {stage: spread(values) for stage in STAGES[1:]
            if (values := [(t.cpu if cpu else t.at)[stage] for t in timelines if stage in (t.cpu if cpu else t.at)])}


BARE_MARKER = "HARNESS-BARE init"  # what images/bare-init.c prints before it powers off


@dataclass(frozen=True)
class BareBoot:
    """A bare boot: QEMU start to the kernel's first line, to /init's line, and to QEMU's exit (seconds),
    and the CPU seconds QEMU used in all (harness/vm/timeline.py says why both)."""

    kernel_s: float
    init_s: float
    exit_s: float
    cpu_s: float | None


def boot_bare(profile: Profile, kernel: Path, initrd: Path, workdir: Path, accel: str,
              timeout: float = 120) -> BareBoot:
    """Boot `kernel` on the profile's machine (the same QEMU command line as a VM's) with the bare
    initramfs (harness/kernel/image.py build_bare_image), whose /init prints one line and powers off;
    BootError when it does not end that way."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "console.log"
    argv = qemu_argv(profile, kernel, initrd, free_port(), accel)
    console = Console(argv, log)
    try:
        if not console.wait_exit(timeout):
            raise BootError("TIMEOUT", f"bare boot did not power off within {timeout:g} s", log)
    finally:
        console.kill()
    init = next((a for a in console.markers if a.line.startswith(BARE_MARKER)), None)
    if console.fatal_splat() or console.kernel_line is None or init is None or console.exit is None:
        raise BootError("CRASH" if console.fatal_splat() else "INFRA",
                        f"bare boot ended (status {console.exit_status}) without reaching its /init", log)
    return BareBoot(round(console.kernel_line.at - console.started, 4), round(init.at - console.started, 4),
                    round(console.exit.at - console.started, 4), console.exit.cpu_s)


def cpu_figures(timelines: list[Timeline], bares: list[BareBoot]) -> dict[str, object]:
    """boot_cpu_s, bare_cpu_s and their ratio; None where QEMU's CPU time could not be read."""
    boot = [t.cpu["ssh"] for t in timelines if "ssh" in t.cpu]
    bare = [b.cpu_s for b in bares if b.cpu_s]
    return {"boot_cpu_s": spread(boot) if boot else None, "bare_cpu_s": spread(bare) if bare else None,
            "boot_to_ssh_cpu_ratio": round(statistics.median(boot) / statistics.median(bare), 3)
            if boot and bare else None}


def stage_durations(timelines: list[Timeline]) -> dict[str, float]:
    """Per stage, the median time from the stage before it (over the boots that have both)."""
    out = {}
    for before, stage in itertools.pairwise(STAGES):
        values = [t.at[stage] - t.at[before] for t in timelines if stage in t.at and before in t.at]
        if values:
            out[stage] = round(statistics.median(values), 4)
    return out


def measure_restores(prepared: Prepared, profile: Profile, accel: str, state: Path, out_dir: Path,
                     n: int) -> list[float]:
    """Restore the snapshot in `state` n times: QEMU start to the first command answered, each."""
    times = []
    for i in range(n):
        vm = guest_vm(prepared, profile, out_dir / f"restore-{i + 1}", accel)
        try:
            with faults.guarded(vm, f"restore {i + 1} of {n}"):
                snapshot.restore(vm, state, timeout=120)
                times.append(vm.boot_s)
        finally:
            vm.stop()
    return times


def run_bench(out_dir: Path, ksrc: str | None, machine: str = "default", boots: int = 3,
              roundtrips: int = 50, restores: int = 10, arch: str = HOST) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(ksrc, arch=arch)  # builds if needed, so that the timing below is the cached path
    started = time.monotonic()
    prepared = prepare(ksrc, arch=arch)
    prepare_cached = time.monotonic() - started
    stamp = json.loads((prepared.build.dir / ".harness-built.json").read_text())
    accel = accel_for(prepared)
    profile = load_profile(machine, arch)
    bare_initrd = build_bare_image(prepared.build.arch)
    boot_times: list[float] = []
    rtts: dict[str, list[float]] = {}
    timelines: list[Timeline] = []
    bares: list[BareBoot] = []
    for i in range(boots):
        vm = guest_vm(prepared, profile, out_dir / f"vm-{i + 1}", accel)
        try:
            # A fault of the machine ends the bench, said as every command says it (harness/vm/faults.py).
            with faults.guarded(vm, f"boot {i + 1} of {boots}") as work:
                vm.start(boot_timeout=120)
                boot_times.append(vm.boot_s)
                timelines.append(vm.timeline)
                if i == 0:
                    assert vm.ssh
                    work.doing = "taking a snapshot"  # of the guest just booted, as a test session's pool does
                    snapshot.take(vm, out_dir / "snapshot")
                    work.doing = "measuring SSH round trips"
                    rtts = measure_roundtrips(vm.ssh, roundtrips)
        finally:
            vm.stop()
    restore_times = measure_restores(prepared, profile, accel, out_dir / "snapshot", out_dir, restores)
    taken = json.loads((out_dir / "snapshot" / snapshot.META).read_text())
    for i in range(boots):  # after the SSH boots, not between them: vm-N are QEMU 1..N (tests count on it)
        bares.append(boot_bare(profile, prepared.build.kernel_image, bare_initrd, out_dir / f"bare-{i + 1}", accel))
    figures = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": prepared.build.release,
        "tree": prepared.tree.identity,
        "accel": accel,
        "kernel_build_s": stamp.get("build_s"),
        "kernel_build_ccache": stamp.get("ccache"),
        "prepare_cached_s": round(prepare_cached, 3),
        "boot_to_ssh_s": spread(boot_times),
        "boot_timeline_s": stage_spreads(timelines),
        "boot_stage_s": stage_durations(timelines),
        "bare_boot_s": spread([b.exit_s for b in bares]),
        "bare_timeline_s": {"kernel": spread([b.kernel_s for b in bares]), "init": spread([b.init_s for b in bares]),
                            "exit": spread([b.exit_s for b in bares])},
        "boot_to_ssh_ratio": round(statistics.median(boot_times) / statistics.median([b.exit_s for b in bares]), 3),
        "boot_timeline_cpu_s": stage_spreads(timelines, cpu=True),
        **cpu_figures(timelines, bares),
        "ssh_roundtrip_s": spread(rtts["server"]),
        "ssh_exec_roundtrip_s": spread(rtts["exec"]),
        "ssh_guest_s": spread(rtts["guest"]),
        "snapshot_take_s": taken["take_s"],
        "snapshot_bytes": taken["bytes"],
        "restore_to_command_s": spread(restore_times),
        "restore_to_boot_ratio": round(statistics.median(restore_times) / statistics.median(boot_times), 3),
    }
    (out_dir / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


# Faults a soak can inject (--fault-rate): what each does to a booted guest, and how it must be classified.
SOAK_FAULTS: dict[str, tuple[str, str]] = {
    "kill": ("CRASH", "QEMU died (killed by SIGKILL)"),  # QEMU SIGKILLed under the workload
    "panic": ("CRASH", "kernel crashed: kernel panic"),  # sysrq c: a real guest panic
    "hang": ("TIMEOUT", "command did not finish within"),  # QEMU SIGSTOPped: nothing runs, nothing answers
}
SOAK_COMMAND_TIMEOUT = 30.0  # a hung guest is found this long after it hung


def _inject(vm: VM, fault: str, delay: float) -> threading.Thread:
    """Do `fault` to the guest `delay` seconds from now, from another thread: it lands under the workload."""

    def act() -> None:
        time.sleep(delay)
        if not (vm.console and vm.console.child.isalive()):
            return
        if fault == "kill":
            os.kill(vm.console.pid, signal.SIGKILL)
        elif fault == "hang":
            os.kill(vm.console.pid, signal.SIGSTOP)  # console.kill()'s SIGKILL ends it
        elif vm.ssh:
            with contextlib.suppress(Exception):  # the guest dies under this very command
                vm.ssh.run(["sh", "-c", "echo c > /proc/sysrq-trigger"], timeout=10)

    thread = threading.Thread(target=act, name=f"inject-{fault}", daemon=True)
    thread.start()
    return thread


def run_soak(out_dir: Path, ksrc: str | None, runs: int = 50, machine: str = "default",
             fault_rate: float = 0.0, seed: int | None = None, command_timeout: float = SOAK_COMMAND_TIMEOUT,
             arch: str = HOST) -> dict:
    """Boot and run the smoke workloads `runs` times; every run that is not clean is a flake, with its cause.

    A run is clean when the guest boots, mm_smoke and munmap exit 0 over SSH, and dmesg has no splat.
    With fault_rate, that share of the runs (drawn at random, `seed` to repeat) gets one of SOAK_FAULTS
    while its workload runs: such a run must end in that fault's outcome and words (harness/vm/faults.py),
    and is counted apart from flakes; a fault classified otherwise is a misclassification.
    """
    from harness.results.splat import find_splats

    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(ksrc, arch=arch)
    accel = accel_for(prepared)
    profile = load_profile(machine, arch)
    rng = random.Random(seed)
    flakes, boots, injected = [], [], []
    for i in range(runs):
        vm = guest_vm(prepared, profile, out_dir / f"run-{i + 1}", accel, probe_modules(prepared))
        fault = rng.choice(sorted(SOAK_FAULTS)) if rng.random() < fault_rate else ""
        cause, outcome = "", "PASS"
        try:
            with faults.guarded(vm, "booting the guest") as work:
                vm.start(boot_timeout=120)
                boots.append(vm.boot_s)
                assert vm.ssh
                if fault:
                    # mm_smoke and munmap take about a second: land inside them, or just before
                    _inject(vm, fault, rng.uniform(0, 0.5))
                for program in ("mm_smoke", "munmap", *(["sleep"] if fault else [])):
                    work.doing = f"{program} ran"
                    # with a fault, a last long command, so that a fault that missed the short ones lands
                    argv = ["sleep", "15"] if program == "sleep" else [f"/guest/bin/{program}"]
                    result = vm.ssh.run(argv, timeout=command_timeout)
                    if not result.ok:
                        cause, outcome = f"{program} exited {result.exit_status}: {result.stderr.strip()[:200]}", "FAIL"
                        break
                if not cause:
                    work.doing = "reading dmesg"
                    if splats := find_splats(vm.ssh.run(["dmesg"], check=True).stdout):
                        cause, outcome = f"splat: {splats[0].title}", "FAIL"
        except HarnessFault as e:  # the one classification (harness/vm/faults.py)
            cause, outcome = e.reason.splitlines()[0], e.outcome.value
        finally:
            vm.stop()
        entry = {"run": i + 1, "outcome": outcome, "cause": cause, "console_log": str(vm.console_log)}
        if fault:
            want_outcome, want_words = SOAK_FAULTS[fault]
            entry |= {"fault": fault, "classified": outcome == want_outcome and want_words in cause}
            injected.append(entry)
            verdict = "classified" if entry["classified"] else "MISCLASSIFIED"
            print(f"  soak {i + 1}/{runs}: injected {fault}: {outcome}: {cause} ({verdict})", flush=True)
            continue
        if cause:
            flakes.append(entry)
        print(f"  soak {i + 1}/{runs}: {f'FLAKE {outcome}: {cause}' if cause else 'ok'}", flush=True)
    figures = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": prepared.build.release, "accel": accel,
               "runs": runs, "flakes": len(flakes), "causes": flakes,
               "healthy_runs": runs - len(injected), "fault_rate": fault_rate, "seed": seed,
               "injected": len(injected), "misclassified": sum(not e["classified"] for e in injected),
               "faults": injected, "boot_to_ssh_s": spread(boots) if boots else None}
    (out_dir / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
