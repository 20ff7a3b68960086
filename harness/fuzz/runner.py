"""A guest that runs programs: the kernel under test booted once with the mirrors, one program at a time.

Each run: the probe cleared (its records, subscriptions and model mirrors), a dmesg marker, fuzz_exec with
the program on stdin and its stdout into a file of the guest (a program that hangs still leaves what it
wrote), then that file, the probe's events and the log since the marker. A run that ends the guest (a
panic, a hang, a lost channel: harness/vm/faults.py names which) is a finding, and the next run boots a
fresh guest, as does a run after a finding that leaves the kernel untrustworthy (TAINTING).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.checks.workloads import GuestSetup, Unavailable
from harness.errors import UserError
from harness.fuzz import oracle
from harness.fuzz.program import Features, FuzzConfig, Program, render
from harness.kernel import userprogs
from harness.kernel.prepare import Prepared
from harness.observe.probe import PROBE_DIR, Dmesg, Probe, parse_events
from harness.results.outcome import HarnessFault, Outcome
from harness.vm import faults
from harness.vm.machine import VM, guest_vm, load_profile
from harness.vm.ssh import SSH, SSHError

MIRRORS = ("model", "hmm")  # --mirror: the probe's model driver, lib/test_hmm.c's device
EXEC = "/tmp/fuzz/fuzz_exec"
OUT = "/tmp/fuzz/out"
PROGRAM_TIMEOUT_S = 60  # a program takes 1-10 s under TCG; one that runs this long hangs
OUTPUT_LIMIT = 4 << 20  # what is read of the executor's output (a program's lines are a few KiB)
STACKS = ('for p in $(pidof fuzz_exec); do for t in /proc/$p/task/*; do '
          'echo "== $t $(grep State $t/status)"; cat $t/stack; done; done')
STACKS_LIMIT = 16384


# Findings after which the guest is not trusted: the kernel broke its contract (an invalidation still open
# makes the next device fault wait for ever), hung, crashed, warned, or left the program's worker unkillable.
# The others (a stale device page, a missed or misnamed invalidation) end with the program's process, whose
# mm, test_hmm file and model mirrors go with it.
TAINTING = {"contract", "hang", "crash", "splat", "executor"}


@dataclass
class Run:
    program: Program
    outcome: oracle.Outcome
    seconds: float


class FuzzGuest:
    """One guest for programs, rebooted when a run leaves it untrustworthy."""

    def __init__(self, prepared: Prepared, machine: str, workdir: Path, accel: str, mirrors: tuple[str, ...],
                 config: FuzzConfig, boot_timeout: float = 180, kcov: bool = False):
        self.prepared, self.machine, self.workdir, self.accel = prepared, machine, workdir, accel
        self.mirrors, self.config, self.boot_timeout, self.kcov = mirrors, config, boot_timeout, kcov
        self.executor = userprogs.kprogram(prepared.build, "fuzz_exec")
        self.vm: VM | None = None
        self.boots = 0
        self.features = Features()

    def _boot(self) -> VM:
        self.boots += 1
        profile = load_profile(self.machine, self.prepared.build.arch.name)
        vm = guest_vm(self.prepared, profile, self.workdir / f"guest-{self.boots}", self.accel, ("mmu_probe",))
        try:
            self._set_up(vm)
        except BaseException:
            vm.stop()  # a guest that could not be set up is not left running
            raise
        return vm

    def _set_up(self, vm: VM) -> None:
        with faults.guarded(vm, "booting the fuzzing guest") as work:
            vm.start(boot_timeout=self.boot_timeout)
            assert vm.ssh
            ssh = vm.ssh
            work.doing = "setting the fuzzing guest up"
            ssh.run(["mkdir", "-p", "/tmp/fuzz"], check=True)
            ssh.put(self.executor, EXEC)
            hmm = "hmm" in self.mirrors and ssh.run(["modprobe", "test_hmm"]).ok and \
                ssh.run(["test", "-e", "/dev/hmm_dmirror0"]).ok
            if "hmm" in self.mirrors and not hmm:
                raise FuzzSetupError(f"--mirror hmm: test_hmm does not load in {self.prepared.build.release} "
                                     "(CONFIG_TEST_HMM=m, with DEVICE_PRIVATE): see the guest's dmesg in "
                                     f"{vm.workdir}")
            # An oops panics, as under syzkaller: a task that died holding a lock (test_hmm's mutex) would
            # otherwise leave the program asleep until its timeout, and the guest untrustworthy.
            # And fuzz_exec's "op N" lines reach the console unthrottled (kernel.printk_devkmsg).
            ssh.run(["sh", "-c", "echo 1 > /proc/sys/kernel/panic_on_oops; echo on > /proc/sys/kernel/printk_devkmsg"],
                    check=True)
            setup = GuestSetup(ssh)  # never undone: the guest is thrown away
            have = {}
            for need in ("swap", "ksm", "writeback_fs"):
                try:
                    setup.provide(need)
                    have[need] = True
                except Unavailable:
                    have[need] = False
            if self.kcov and not (self.prepared.build.has("KCOV_INSTRUMENT_ALL") and
                                  ssh.run(["test", "-e", "/sys/kernel/debug/kcov"]).ok):
                # without INSTRUMENT_ALL (tinyconfig turns it off) no file is instrumented: no PC is ever traced
                raise FuzzSetupError(f"--kcov: {self.prepared.build.release} traces no kernel code: it needs "
                                     "--set CONFIG_KCOV=y --set CONFIG_KCOV_INSTRUMENT_ALL=y")
            self.features = Features(hmm=hmm, file=have["writeback_fs"], ksm=have["ksm"],
                                     model="model" in self.mirrors, kcov=self.kcov)

    def run(self, program: Program) -> Run:
        """One program, judged. A fault of the guest is the program's finding (and the guest is rebooted);
        a lost channel (INFRA: not the kernel's doing) gets the program one more try on a fresh guest."""
        started = time.monotonic()
        for attempt in (1, 2):
            if self.vm is None:
                self.vm = self._boot()
            vm = self.vm
            assert vm.ssh
            try:
                with faults.guarded(vm, "running a fuzz program") as work:
                    out = run_program(vm.ssh, program, self.flags(), self.config, work)
                break
            except HarnessFault as fault:
                if fault.outcome != Outcome.INFRA:
                    out = self._fault_outcome(program, fault)
                    break
                self.stop()
                if attempt == 2:
                    raise
        if out.finding and (out.finding.check in TAINTING or any("stuck" in n for n in out.notes)):
            self.stop()  # a fresh guest for whatever runs next
        return Run(program, out, time.monotonic() - started)

    def flags(self) -> list[str]:
        return [*([] if self.features.hmm else ["--no-hmm"]), *([] if self.features.model else ["--no-model"]),
                *(["--kcov"] if self.features.kcov else [])]

    def _fault_outcome(self, program: Program, fault: HarnessFault) -> oracle.Outcome:
        """A guest that died or hung under a program: what its output file still says, and the fault."""
        out = oracle.Outcome()
        vm = self.vm
        if vm and vm.ssh and fault.outcome == Outcome.TIMEOUT and "still answers" in str(fault):
            try:
                out = oracle.parse_output(read_output(vm.ssh))
                # where each of its tasks sleeps: what a hang report needs first
                out.notes.append(vm.ssh.run(["sh", "-c", STACKS], timeout=30).stdout[:STACKS_LIMIT])
            except (SSHError, oracle.ExecutorError):
                pass
        texts = [op.text() for op in program]
        if out.finding is None:
            blamed = last_op_on_console(vm.console.text if vm and vm.console else "", len(texts))
            text = texts[blamed] if blamed is not None else ""
            if vm and vm.console and (fatal := vm.console.fatal_splat()):
                # the report that started it, not the panic it ended in ("Fatal exception"): its title is
                # the finding's signature
                first = next((s for s in vm.console.finished_splats() if s.kind != "panic"), fatal)
                out.finding = oracle.Finding("crash", blamed, fault.reason, text, first.title)
            else:
                check = "hang" if fault.outcome == Outcome.TIMEOUT else "crash"
                out.finding = oracle.Finding(check, blamed, fault.reason, text)
        elif out.finding.op is not None and out.finding.op < len(texts):
            out.finding = oracle.Finding(out.finding.check, out.finding.op, out.finding.detail, texts[out.finding.op])
        out.notes.append(f"the guest ended the run: {fault}")
        return out

    def stop(self) -> None:
        if self.vm:
            self.vm.stop()
            self.vm = None


def run_program(ssh: SSH, program: Program, flags: list[str], config: FuzzConfig,
                work: faults.Work | None = None) -> oracle.Outcome:
    """One program in a guest where fuzz_exec is at EXEC, judged (the caller guards against the guest's faults)."""
    work = work or faults.Work()
    Probe(ssh).clear()
    dmesg = Dmesg(ssh, "fuzz")
    work.doing = "running a fuzz program (fuzz_exec)"
    result = ssh.run(["sh", "-c", 'exec "$0" "$@" > ' + OUT, EXEC, *flags], stdin=render(program).encode(),
                     timeout=PROGRAM_TIMEOUT_S)
    work.doing = "reading what the fuzz program left"
    out = oracle.parse_output(read_output(ssh))
    if result.exit_status == 2:
        raise oracle.ExecutorError(f"fuzz_exec refused the program: {result.stderr.strip()[-500:]}")
    if result.exit_status not in (0, 3):
        out.finding = oracle.Finding("executor", oracle.last_op(out) if out.ops else None,
                                     f"fuzz_exec ended with exit status {result.exit_status} "
                                     f"{'; '.join(out.notes)}: {result.stderr.strip()[-300:]}")
    events = parse_events(ssh.run(["cat", f"{PROBE_DIR}/events"], check=True, timeout=60).stdout)
    return oracle.judge(program, out, events, dmesg.since_mark(), config)


def last_op_on_console(console: str, nops: int) -> int | None:
    """The operation fuzz_exec said it started last ("fuzz_exec: op N: ..." in the kernel log)."""
    found = re.findall(r"fuzz_exec: op (\d+): ", console[-(1 << 20):])
    return min(int(found[-1]), nops - 1) if found and nops else None


def read_output(ssh: SSH) -> str:
    return ssh.run(["head", "-c", str(OUTPUT_LIMIT), OUT], check=True, timeout=60).stdout


class FuzzSetupError(UserError):
    """The kernel cannot have a mirror that was asked for."""
