"""Capture the golden splat logs of tests/data/splats/<series>/ from real guests (see README.md here).

Each capture boots the harness's guest with the guest/faults modules, does one thing that makes the
kernel print a splat (a write to a fault_inject debugfs file, a module that panics as it loads, a
sysrq, a kernel command line), and keeps the console log from a few lines before that thing to the
end. Which splats the parser finds in them, and what it must call them, is tests/test_splat.py's
business: this script never runs the parser.

    .venv/bin/python tests/data/splats/regenerate.py                           # Linux 6.12
    .venv/bin/python tests/data/splats/regenerate.py --kernel-src=debian:6.1   # Linux 6.1
    .venv/bin/python tests/data/splats/regenerate.py --only warning,oops       # some of them

A kernel that is not cached yet is built first (about 10 minutes each; the KASAN capture needs the
`debug/kasan` kernel of the same series).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.kernel import prepare as kprepare
from harness.vm.console import Console
from harness.vm.machine import VM, free_port, load_profile, probe_accel, qemu_argv
from harness.vm.ssh import SSHError

HERE = Path(__file__).resolve().parent
CONTEXT = 5  # lines kept before the line that starts the capture
QUIET_S = 3.0  # the splat is over when the console has printed nothing for this long
FAULTS = "/sys/kernel/debug/fault_inject"
# Where a boot-time capture starts: the kernel handing over to /init (or to what rdinit= names).
BOOT_START = re.compile(r"Run \S+ as init process")


@dataclass(frozen=True)
class Capture:
    """One golden log: how to boot, what to do once booted (nothing: the boot itself is the fault)."""

    name: str
    why: str
    command: str = ""  # shell command run in the guest over SSH
    modules: tuple[str, ...] = ("fault_inject",)
    append: tuple[str, ...] = ()  # more kernel command line
    fragments: tuple[str, ...] = ()  # the kernel: extra config fragments (debug/kasan)
    whole_log: bool = False  # keep every line (a clean boot: all of it must parse as no splat)

    @property
    def crashes_at_boot(self) -> bool:
        return not self.command and not self.whole_log


def _fault(name: str, value: str = "1") -> str:
    return f"echo {value} > {FAULTS}/{name}"


CAPTURES = (
    Capture("clean_boot", "a boot with the probe and fault modules loaded, and nothing wrong", whole_log=True),
    Capture("warning", "WARN_ON(1) in fault_inject's warn_write", _fault("warn")),
    Capture(
        "warning_panic_on_warn",
        "the same WARN_ON with panic_on_warn=1: the warning is fatal",
        _fault("warn"),
        append=("panic_on_warn=1",),
    ),
    Capture(
        "oops_null_deref",
        "a NULL write in fault_inject's oops_write: the writer dies, the kernel goes on",
        _fault("oops"),
    ),
    Capture(
        "oops_null_deref_panic",
        "the same NULL write with oops=panic: a fatal oops",
        _fault("oops"),
        append=("oops=panic",),
    ),
    Capture("panic", "panic() in fault_inject's panic_write", _fault("panic")),
    Capture("panic_module_init", "fault_panic panics in its module_init, during boot", modules=("fault_panic",)),
    # Arguments after "--" go to init: PID 1 is `busybox false`, which exits at once.
    Capture(
        "panic_init_exit",
        "init exits: the kernel cannot go on without PID 1",
        modules=(),
        append=("rdinit=/bin/busybox", "--", "false"),
    ),
    Capture("sysrq_crash", "sysrq 'c': the sysrq handler calls panic()", "echo c > /proc/sysrq-trigger"),
    # RCU reports a stall only of a grace period in progress, and on an idle guest there may be none:
    # a loop of exiting processes (each frees its task through call_rcu()) keeps one going.
    Capture(
        "rcu_stall",
        "fault_inject's spin_write busy-waits 30 s without scheduling (RCU stall timeout 21 s)",
        f"(while :; do /bin/true; done) & sleep 1; {_fault('spin', '30')}; kill $!",
    ),
    Capture(
        "kasan",
        "a read after kfree in fault_inject's use_after_free_write, on the KASAN kernel",
        _fault("use_after_free"),
        fragments=("debug/kasan",),
    ),
)


def trimmed(console: str, start: re.Pattern[str] | None) -> str:
    """The console from CONTEXT lines before the first line matching `start` to its end, with \\n line ends."""
    lines = console.replace("\r", "").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if start is not None:
        first = next(i for i, line in enumerate(lines) if start.search(line))
        lines = lines[max(0, first - CONTEXT) :]
    return "".join(f"{line}\n" for line in lines)


def wait_quiet(vm: VM, timeout: float = 60) -> None:
    """Until QEMU exits or its console has been silent for QUIET_S: the splat has printed in full."""
    assert vm.console
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not vm.console.wait_exit(0.5):
        if time.monotonic() - vm.console.last_output > QUIET_S:
            return


def boot_to_crash(vm: VM, timeout: float = 120) -> None:
    """Boot a guest that panics before it is ready, and let QEMU exit by itself (panic=-1, -no-reboot).

    Not VM.start(): it stops QEMU at the panic's first line, before the kernel has printed the rest.
    """
    vm.workdir.mkdir(parents=True, exist_ok=True)
    argv = qemu_argv(vm.profile, vm.kernel, vm.image.initramfs, free_port(), vm.accel, vm.extra_append)
    vm.console = Console(argv, vm.console_log)
    if not vm.console.wait_exit(timeout):
        raise RuntimeError(f"{vm.console_log}: the guest did not crash within {timeout:g} s")


def run_in_guest(vm: VM, command: str, boot_timeout: float) -> re.Pattern[str]:
    """Boot, note the command in the kernel log, run it; the capture starts at that note."""
    vm.start(boot_timeout=boot_timeout)
    assert vm.ssh
    note = f"regenerate.py: {command}"
    vm.ssh.run(["sh", "-c", 'echo "$1" > /dev/kmsg', "note", note], check=True)
    # The guest may panic under the command, or kill the shell that runs it.
    with contextlib.suppress(SSHError):
        vm.ssh.run(["sh", "-c", command], timeout=120)
    wait_quiet(vm)
    return re.compile(re.escape(note))


def run_capture(capture: Capture, prepared: kprepare.Prepared, accel: str, workdir: Path) -> str:
    """Boot, do the capture's thing, and return the trimmed console log."""
    modules = (*(["mmu_probe"] if prepared.build.has("MMU_NOTIFIER") else []), *capture.modules)
    append = (f"harness.modules={','.join(modules)}",) if modules else ()
    vm = VM(
        load_profile("default", prepared.build.arch.name),
        prepared.build.kernel_image,
        prepared.image,
        workdir / capture.name,
        accel=accel,
        extra_append=(*append, *capture.append),
    )
    boot_timeout = 300 if capture.fragments else 120
    start: re.Pattern[str] | None = None
    try:
        if capture.crashes_at_boot:
            boot_to_crash(vm, boot_timeout)
            start = BOOT_START
        elif capture.command:
            start = run_in_guest(vm, capture.command, boot_timeout)
        else:
            vm.start(boot_timeout=boot_timeout)
    finally:
        vm.stop()
    # Bytes, not text mode: universal newlines would make two line ends of the pty's "\r\r\n".
    return trimmed(vm.console_log.read_bytes().decode(errors="replace"), start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel-src", default=None, help="as for `harness run` (default: Debian's 6.12)")
    parser.add_argument("--arch", default="x86_64", help="as for `harness run`: arm64's logs go to arm64-<series>/")
    parser.add_argument("--only", default="", help="comma-separated capture names (default: all)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the VMs' own logs go (default: a temp dir)")
    args = parser.parse_args(argv)
    wanted = set(filter(None, args.only.split(",")))
    unknown = wanted - {c.name for c in CAPTURES}
    if unknown:
        parser.error(f"unknown capture(s): {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="splats-"))
    kernels: dict[tuple[str, ...], kprepare.Prepared] = {}
    for capture in CAPTURES:
        if wanted and capture.name not in wanted:
            continue
        if capture.fragments not in kernels:
            kernels[capture.fragments] = kprepare.prepare(args.kernel_src, fragments=capture.fragments,
                                                          arch=args.arch)
        prepared = kernels[capture.fragments]
        accel = "tcg" if prepared.build.arch.foreign else probe_accel(prepared.build.kernel_image, prepared.image)
        series = prepared.tree.series if not prepared.build.arch.foreign else f"{args.arch}-{prepared.tree.series}"
        out = HERE / series / f"{capture.name}.log"
        out.parent.mkdir(exist_ok=True)
        out.write_text(run_capture(capture, prepared, accel, workdir / prepared.tree.series))
        print(f"{out.relative_to(HERE)}: {out.stat().st_size} bytes ({capture.why})", flush=True)
    print(f"VM logs: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
