"""`harness bench`: the figures a change to the pipeline is compared against (bench.json).

Keys (times in seconds):
  kernel_build_s          how long the cached kernel's build took when it was built (from its stamp)
  kernel_build_ccache     ccache hits/misses of that build ("cold" means mostly misses)
  prepare_cached_s        source + config + build + image when everything is cached (the no-rebuild path)
  boot_to_ssh_s           QEMU start to an SSH session, median of `boots` boots (min and max beside it)
  ssh_roundtrip_s         one `true` over the open SSH session, median of `roundtrips` runs
  accel                   tcg or kvm, as probed
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from harness.kernel.prepare import prepare
from harness.results.outcome import HarnessFault
from harness.vm import faults
from harness.vm.machine import VM, load_profile, probe_accel


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


def run_bench(out_dir: Path, ksrc: str | None, machine: str = "default", boots: int = 3,
              roundtrips: int = 20) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(ksrc)  # builds if needed, so that the timing below is the cached path
    started = time.monotonic()
    prepared = prepare(ksrc)
    prepare_cached = time.monotonic() - started
    stamp = json.loads((prepared.build.dir / ".harness-built.json").read_text())
    accel = probe_accel(prepared.build.bzimage, prepared.image)
    profile = load_profile(machine)
    boot_times, rtts = [], []
    for i in range(boots):
        vm = VM(profile, prepared.build.bzimage, prepared.image, out_dir / f"vm-{i + 1}", accel=accel)
        try:
            # A fault of the machine ends the bench, said as every command says it (harness/vm/faults.py).
            with faults.guarded(vm, f"boot {i + 1} of {boots}") as work:
                vm.start(boot_timeout=120)
                boot_times.append(vm.boot_s)
                if i == 0:
                    assert vm.ssh
                    work.doing = "measuring SSH round trips"
                    for _ in range(roundtrips):
                        rtts.append(vm.ssh.run(["true"], check=True).duration_s)
        finally:
            vm.stop()
    figures = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": prepared.build.release,
        "tree": prepared.tree.identity,
        "accel": accel,
        "kernel_build_s": stamp.get("build_s"),
        "kernel_build_ccache": stamp.get("ccache"),
        "prepare_cached_s": round(prepare_cached, 3),
        "boot_to_ssh_s": spread(boot_times),
        "ssh_roundtrip_s": spread(rtts),
    }
    (out_dir / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def run_soak(out_dir: Path, ksrc: str | None, runs: int = 50, machine: str = "default") -> dict:
    """Boot and run the smoke workloads `runs` times; every run that is not clean is a flake, with its cause.

    A run is clean when the guest boots, mm_smoke and munmap exit 0 over SSH, and dmesg has no splat.
    """
    from harness.observe.splat import find_splats

    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(ksrc)
    accel = probe_accel(prepared.build.bzimage, prepared.image)
    profile = load_profile(machine)
    append = ("harness.modules=mmu_probe",) if prepared.build.has("MMU_NOTIFIER") else ()
    flakes, boots = [], []
    for i in range(runs):
        vm = VM(profile, prepared.build.bzimage, prepared.image, out_dir / f"run-{i + 1}", accel=accel,
                extra_append=append)
        cause, outcome = "", "PASS"
        try:
            with faults.guarded(vm, "booting the guest") as work:
                vm.start(boot_timeout=120)
                boots.append(vm.boot_s)
                assert vm.ssh
                for program in ("mm_smoke", "munmap"):
                    work.doing = f"{program} ran"
                    result = vm.ssh.run([f"/guest/bin/{program}"], timeout=60)
                    if not result.ok:
                        cause, outcome = f"{program} exited {result.exit_status}: {result.stderr.strip()[:200]}", "FAIL"
                        break
                work.doing = "reading dmesg"
                if not cause and (splats := find_splats(vm.ssh.run(["dmesg"], check=True).stdout)):
                    cause, outcome = f"splat: {splats[0].title}", "FAIL"
        except HarnessFault as e:  # the one classification (harness/vm/faults.py)
            cause, outcome = e.reason.splitlines()[0], e.outcome.value
        finally:
            vm.stop()
        if cause:
            flakes.append({"run": i + 1, "outcome": outcome, "cause": cause, "console_log": str(vm.console_log)})
        print(f"  soak {i + 1}/{runs}: {f'FLAKE {outcome}: {cause}' if cause else 'ok'}", flush=True)
    figures = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": prepared.build.release, "accel": accel,
               "runs": runs, "flakes": len(flakes), "causes": flakes,
               "boot_to_ssh_s": spread(boots) if boots else None}
    (out_dir / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
