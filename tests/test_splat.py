"""harness.splat against golden console logs (Linux 6.12 and 6.1, x86_64) and small hand-made cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.results.splat import MAX_LINES, Splat, SplatScanner, find_splats, is_allowed, strip_prefix

DATA = Path(__file__).parent / "data" / "splats"

# Golden logs (tests/data/splats/README.md): <series>/<name>.log are real console logs captured by
# regenerate.py there; <name>.handwritten.log are hand-written, for splats no guest module can produce
# on our kernels. The expectations are read off the logs, not off the parser.
# log (its path under DATA, without .log) -> splats: (kind, title, fatal, text of its first line, of its last line)
GOLDEN: dict[str, list[tuple[str, str, bool, str, str]]] = {
    "6.12/clean_boot": [],
    "6.12/warning": [
        ("WARNING", "WARNING in warn_write", False, "[ cut here ]", "---[ end trace 0000000000000000 ]---"),
    ],
    "6.12/warning_panic_on_warn": [
        # panic_on_warn: the panic line (no stack dump of its own) and `Kernel Offset` close the WARNING.
        ("WARNING", "WARNING in warn_write", True, "[ cut here ]", "Kernel Offset: disabled"),
    ],
    "6.12/oops_null_deref": [
        # The writer is killed, the kernel goes on: the oops ends with the note about the dead task.
        (
            "oops",
            "BUG: kernel NULL pointer dereference in oops_write",
            False,
            "BUG: kernel NULL pointer dereference, address:",
            "note: sh[",
        )
    ],
    "6.12/oops_null_deref_panic": [
        (
            "oops",
            "BUG: kernel NULL pointer dereference in oops_write",
            True,
            "BUG: kernel NULL pointer dereference, address:",
            "Kernel Offset: disabled",
        )
    ],
    "6.12/panic": [
        (
            "panic",
            "kernel panic: fault_inject: panic on request",
            True,
            "Kernel panic - not syncing: fault_inject: panic on request",
            "Kernel Offset: disabled",
        )
    ],
    "6.12/panic_module_init": [
        (
            "panic",
            "kernel panic: fault_panic: panicking on purpose at module load",
            True,
            "Kernel panic - not syncing: fault_panic",
            "Kernel Offset: disabled",
        )
    ],
    "6.12/panic_init_exit": [
        (
            "panic",
            "kernel panic: Attempted to kill init!",
            True,
            "Kernel panic - not syncing: Attempted to kill init!",
            "Kernel Offset: disabled",
        )
    ],
    "6.12/sysrq_crash": [
        # panic=-1 reboots at once: no end marker.
        ("panic", "kernel panic: sysrq triggered crash", True, "sysrq: Trigger a crash", "Kernel Offset: disabled")
    ],
    "6.12/rcu_stall": [
        # One CPU: the stall shows as RCU's grace-period kthread starved; the culprit is in the stack dump
        # "where RCU GP kthread last ran" (every frame a `?`: CONFIG_UNWINDER_GUESS), under delay_loop.
        (
            "rcu_stall",
            "INFO: rcu detected stall in spin_write",
            False,
            "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            "</TASK>",
        )
    ],
    "6.12/kasan": [
        (
            "KASAN",
            "KASAN: slab-use-after-free Read in use_after_free_write",
            False,
            "=" * 66,
            "Disabling lock debugging due to kernel taint",
        )
    ],
    # 6.1: the same faults; its oops says "Oops: 0002 [#1]" once, its RCU stall's "(detected by ...)" has no "rcu: ".
    "6.1/clean_boot": [],
    # 7.2 on: kernel/panic.c:__warn prints "WARNING: at FUNCTION+OFF/LEN [MODULE], CPU#N: COMM/PID"
    "7.3/warning": [
        ("WARNING", "WARNING in warn_write", False, "[ cut here ]", "---[ end trace 0000000000000000 ]---"),
    ],
    "7.3/warning_panic_on_warn": [
        ("WARNING", "WARNING in warn_write", True, "[ cut here ]", "Kernel Offset: disabled"),
    ],
    "7.3/clean_boot": [],
    # arm64 (7.3.4, QEMU virt): arch/arm64/mm/fault.c's "Unable to handle kernel ... at virtual address", then die()'s
    # "Internal error: Oops: <ESR> [#1]"; the culprit is the pc line's function ("pc : oops_write+0xc/0x14")
    "arm64-7.3/clean_boot": [],
    "arm64-7.3/warning": [
        ("WARNING", "WARNING in warn_write", False, "[ cut here ]", "---[ end trace 0000000000000000 ]---"),
    ],
    "arm64-7.3/oops_null_deref": [
        ("oops", "Unable to handle kernel NULL pointer dereference in oops_write", False,
         "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000",
         "---[ end trace 0000000000000000 ]---"),
    ],
    "arm64-7.3/oops_null_deref_panic": [
        ("oops", "Unable to handle kernel NULL pointer dereference in oops_write", True,
         "Unable to handle kernel NULL pointer dereference at virtual address", "Memory Limit: none"),
    ],
    # arm64's panic ends with the CPU features and memory limit lines, after Kernel Offset
    "arm64-7.3/panic": [
        ("panic", "kernel panic: fault_inject: panic on request", True,
         "Kernel panic - not syncing: fault_inject: panic on request", "Memory Limit: none"),
    ],
    "arm64-7.3/sysrq_crash": [
        ("panic", "kernel panic: sysrq triggered crash", True, "sysrq: Trigger a crash", "Memory Limit: none"),
    ],
    # harness fuzz's finding in lib/test_hmm.c on arm64 (configs/fuzz.yaml): the pc is in memcpy, a leaf function
    # (its caller, dmirror_fops_unlocked_ioctl, is in lr and not in the call trace), with panic_on_oops set
    "arm64-7.3/oops_paging_request_memcpy_panic": [
        ("oops", "Unable to handle kernel paging request in dmirror_fops_unlocked_ioctl", True,
         "Unable to handle kernel paging request at virtual address ffff7ffffffff000", "Memory Limit: none"),
    ],
    "7.3/oops_null_deref": [
        ("oops", "BUG: kernel NULL pointer dereference in oops_write", False,
         "BUG: kernel NULL pointer dereference, address:", "note: sh["),
    ],
    "7.3/oops_null_deref_panic": [
        ("oops", "BUG: kernel NULL pointer dereference in oops_write", True,
         "BUG: kernel NULL pointer dereference, address:", "Kernel Offset: disabled"),
    ],
    # 7.3's panic() prints no stack dump of its own here: the panic line, then Kernel Offset
    "7.3/panic": [
        ("panic", "kernel panic: fault_inject: panic on request", True,
         "Kernel panic - not syncing: fault_inject: panic on request", "Kernel Offset: disabled"),
    ],
    "7.3/panic_module_init": [
        ("panic", "kernel panic: fault_panic: panicking on purpose at module load", True,
         "Kernel panic - not syncing: fault_panic", "Kernel Offset: disabled"),
    ],
    "7.3/panic_init_exit": [
        ("panic", "kernel panic: Attempted to kill init!", True, "Kernel panic - not syncing: Attempted to kill init!",
         "Kernel Offset: disabled"),
    ],
    "7.3/sysrq_crash": [
        ("panic", "kernel panic: sysrq triggered crash", True, "sysrq: Trigger a crash", "Kernel Offset: disabled"),
    ],
    # No 7.3/rcu_stall: 7.3's default preemption model here is PREEMPT_LAZY (CONFIG_PREEMPTION, so preemptible RCU),
    # and fault_inject's spin_write busy-waits with preemption enabled: the scheduler preempts it and no grace
    # period waits on it, so no stall is reported (regenerate.py's capture ends with no splat at all).
    "6.1/warning": [
        ("WARNING", "WARNING in warn_write", False, "[ cut here ]", "---[ end trace 0000000000000000 ]---"),
    ],
    "6.1/warning_panic_on_warn": [
        ("WARNING", "WARNING in warn_write", True, "[ cut here ]", "Kernel Offset: disabled"),
    ],
    "6.1/oops_null_deref": [
        (
            "oops",
            "BUG: kernel NULL pointer dereference in oops_write",
            False,
            "BUG: kernel NULL pointer dereference, address:",
            "note: sh[",
        )
    ],
    "6.1/oops_null_deref_panic": [
        (
            "oops",
            "BUG: kernel NULL pointer dereference in oops_write",
            True,
            "BUG: kernel NULL pointer dereference, address:",
            "Kernel Offset: disabled",
        )
    ],
    "6.1/panic": [
        (
            "panic",
            "kernel panic: fault_inject: panic on request",
            True,
            "Kernel panic - not syncing: fault_inject: panic on request",
            "Kernel Offset: disabled",
        )
    ],
    "6.1/panic_module_init": [
        (
            "panic",
            "kernel panic: fault_panic: panicking on purpose at module load",
            True,
            "Kernel panic - not syncing: fault_panic",
            "Kernel Offset: disabled",
        )
    ],
    "6.1/panic_init_exit": [
        (
            "panic",
            "kernel panic: Attempted to kill init!",
            True,
            "Kernel panic - not syncing: Attempted to kill init!",
            "Kernel Offset: disabled",
        )
    ],
    "6.1/sysrq_crash": [
        ("panic", "kernel panic: sysrq triggered crash", True, "sysrq: Trigger a crash", "Kernel Offset: disabled")
    ],
    "6.1/rcu_stall": [
        (
            "rcu_stall",
            "INFO: rcu detected stall in spin_write",
            False,
            "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            "</TASK>",
        )
    ],
    "oops_gpf_nonfatal.handwritten": [
        (
            "oops",
            "general protection fault in probe_release",
            False,
            "Oops: general protection fault",
            "note: fork_exit[152] exited with irqs disabled",
        )
    ],
    "kernel_bug_mm.handwritten": [
        ("BUG", "kernel BUG in folio_unlock", False, "[ cut here ]", "note: hmm-tests[161] exited with preempt_count 1")
    ],
    "ubsan.handwritten": [
        ("UBSAN", "UBSAN: array-index-out-of-bounds in record", False, "[ cut here ]", "---[ end trace ]---")
    ],
    "lockdep_circular.handwritten": [
        ("lockdep", "possible deadlock in probe_invalidate_range_start", False, "=" * 54, "</TASK>")
    ],
    "hung_task.handwritten": [
        ("hung_task", "INFO: task hung in mirror_op_write", False, "INFO: task hmm_wait:133 blocked", "</TASK>")
    ],
    "soft_lockup.handwritten": [
        ("soft_lockup", "BUG: soft lockup in spin_write", False, "watchdog: BUG: soft lockup - CPU#1", "</TASK>")
    ],
    "kfence.handwritten": [("kfence", "KFENCE: use-after-free read in probe_release", False, "=" * 66, "=" * 66)],
    "kmemleak.handwritten": [
        (
            "kmemleak",
            "memory leak in subscribe",
            False,
            "kmemleak: unreferenced object",
            "kmemleak: 1 new suspected memory leaks",
        )
    ],
}


def _log(name: str) -> str:
    return (DATA / f"{name}.log").read_text()


def _lines(text: str) -> list[str]:
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def test_every_golden_log_has_expectations() -> None:
    assert sorted(str(p.relative_to(DATA).with_suffix("")) for p in DATA.rglob("*.log")) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden(name: str) -> None:
    text = _log(name)
    got = find_splats(text)
    assert [(s.kind, s.title, s.fatal) for s in got] == [(k, t, f) for k, t, f, _, _ in GOLDEN[name]]
    lines = _lines(text)
    for splat, (_, _, _, first, last) in zip(got, GOLDEN[name], strict=True):
        body = splat.text.split("\n")
        assert first in body[0]
        assert strip_prefix(body[-1]).strip().startswith(last.strip())
        # The text is the input's own lines, timestamps and all, from `line` on.
        assert body == lines[splat.line - 1 : splat.line - 1 + len(body)]
        assert len(body) <= MAX_LINES


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_titles_are_stable(name: str) -> None:
    for splat in find_splats(_log(name)):
        assert not re.search(r"0x|\+0x|\b[0-9a-f]{8,}\b|\[\w+\]|:\d+\]|pid|PID|CPU#\d", splat.title), splat.title


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_scanner_matches_find_splats(name: str) -> None:
    """Fed line by line, the scanner reports each splat at its header and ends with find_splats' result."""
    text = _log(name)
    scanner = SplatScanner()
    events: list[tuple[int, Splat]] = []
    for n, line in enumerate(_lines(text), start=1):
        event = scanner.feed(line + "\n")
        if event is not None:
            events.append((n, event))
    final = scanner.finish()
    assert final == find_splats(text)
    assert {e.line for _, e in events} == {s.line for s in final}
    for splat in final:
        n, event = next((n, e) for n, e in events if e.line == splat.line)
        # At its header: after at most its prelude (`[ cut here ]` and a WARN() message).
        assert splat.line <= n <= splat.line + 2
        assert event.kind == splat.kind
        assert splat.text.startswith(event.text)


def _with_panic_stack(name: str, frames: list[str]) -> list[str]:
    """A real log with the stack dump a CONFIG_DEBUG_BUGVERBOSE kernel prints after its panic line (ours print none)."""
    lines = _lines(_log(name))
    at = next(i for i, line in enumerate(lines) if "Kernel panic - not syncing" in line) + 1
    stamp = lines[at - 1][: lines[at - 1].index("Kernel panic")]
    dump = [
        "CPU: 0 UID: 0 PID: 57 Comm: sh Tainted: G           O       6.12.117 #1",
        "Tainted: [O]=OOT_MODULE",
        "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014",
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x5d/0x80",
        " panic+0x118/0x2f0",
        *frames,
        " do_syscall_64+0x82/0x160",
        " entry_SYSCALL_64_after_hwframe+0x76/0x7e",
        "RIP: 0033:0x4a2f5c",
        "Code: Unable to access opcode bytes at 0x4a2f32.",
        "RSP: 002b:00007ffd3c1e6a88 EFLAGS: 00000246 ORIG_RAX: 0000000000000001",
        "RAX: ffffffffffffffda RBX: 0000000000000003 RCX: 00000000004a2f5c",
        "RDX: 0000000000000008 RSI: 00007ffd3c1e6b00 RDI: 0000000000000003",
        "RBP: 00007ffd3c1e6be0 R08: 0000000000000000 R09: 0000000000000000",
        "R10: 0000000000000000 R11: 0000000000000246 R12: 00007ffd3c1e6b00",
        "R13: 00007ffd3c1e6f48 R14: 0000000000000000 R15: 0000000000000000",
        " </TASK>",
    ]
    return lines[:at] + [stamp + line for line in dump] + lines[at:]


def test_scanner_reports_a_panic_while_it_prints() -> None:
    lines = _with_panic_stack(
        "6.12/panic_module_init",
        [
            " fault_panic_init+0x15/0xff0 [fault_panic]",
            " do_one_initcall+0x4e/0x1f0",
            " do_init_module+0x60/0x230",
            " init_module_from_file+0x89/0xe0",
            " idempotent_init_module+0x11a/0x310",
            " __x64_sys_finit_module+0x5e/0xb0",
        ],
    )
    scanner = SplatScanner()
    fed = ((n, scanner.feed(line)) for n, line in enumerate(lines, start=1))
    n, event = next((n, e) for n, e in fed if e is not None)
    assert n < len(lines) - 20  # the call trace is still to come
    assert "Kernel panic - not syncing" in lines[n - 1]
    assert event.fatal and event.kind == "panic"
    assert event.title == "kernel panic: fault_panic: panicking on purpose at module load"


def test_scanner_reports_an_oops_then_its_panic() -> None:
    lines = _lines(_log("6.12/oops_null_deref_panic"))
    scanner = SplatScanner()
    events = [(n, e) for n, line in enumerate(lines, start=1) if (e := scanner.feed(line)) is not None]
    assert [(e.kind, e.fatal) for _, e in events] == [("oops", False), ("oops", True)]
    assert "BUG: kernel NULL pointer dereference" in lines[events[0][0] - 1]
    assert "Kernel panic - not syncing: Fatal exception" in lines[events[1][0] - 1]
    # At the panic line the RIP has been read: the title is final.
    assert events[1][1].title == "BUG: kernel NULL pointer dereference in oops_write"
    assert events[0][1].title == "BUG: kernel NULL pointer dereference"  # provisional: no RIP yet


def test_finish_closes_a_splat_cut_short() -> None:
    """A VM killed mid-panic still yields the panic, with what was printed."""
    lines = _with_panic_stack(
        "6.12/sysrq_crash",
        [
            " sysrq_handle_crash+0x16/0x20",
            " __handle_sysrq+0x97/0x180",
            " write_sysrq_trigger+0x25/0x40",
            " proc_reg_write+0x55/0xa0",
            " vfs_write+0xf2/0x420",
            " ksys_write+0x63/0xe0",
        ],
    )
    scanner = SplatScanner()
    for line in lines[: lines.index(next(raw for raw in lines if "Call Trace:" in raw)) + 3]:
        scanner.feed(line)
    (splat,) = scanner.finish()
    assert (splat.kind, splat.title, splat.fatal) == ("panic", "kernel panic: sysrq triggered crash", True)
    assert splat.text.split("\n")[-1].endswith("dump_stack_lvl+0x5d/0x80")


# ---- not splats ----

NOT_SPLATS = [
    "Kernel command line: console=ttyS0 panic=-1 oops=panic panic_on_warn=1 softlockup_panic=1",
    "Command line: console=ttyS0 panic=1 hung_task_panic=1",
    "ACPI BIOS Warning (bug): Incorrect checksum in table [BGRT] - 0x3A, should be 0x39 (20240827/utcksum-58)",
    "ACPI Warning: SystemIO range 0x0000000000000B00-0x0000000000000B08 conflicts with OpRegion",
    "[Firmware Bug]: TSC doesn't count with P0 frequency!",
    "hpet: warning: lost 2 timer interrupts during early boot, ignoring",
    "mmu_probe: warning: no subscriber yet, events will be dropped",
    "Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!",
    "WARNING: /dev/kvm not usable, skipping the kvm suite",
    "rcu: Preemptible hierarchical RCU implementation.",
    "watchdog: Delayed init of the lockup detector failed: -19",
    "kmemleak: Kernel memory leak detector initialized (mem pool available: 15820)",
    "INFO: lockdep is turned off.",
    "init: sysctl kernel.panic_on_oops=1 kernel.panic_on_warn=0",
    "mmu_probe: selftest: BUG_ON() not hit, panic avoided",
    "sysrq: Show Blocked State",
    "Run /init as init process",
]


@pytest.mark.parametrize("line", NOT_SPLATS)
@pytest.mark.parametrize("prefix", ["", "[    1.234567] ", "<4>[    1.234567] "])
def test_not_a_splat(line: str, prefix: str) -> None:
    assert find_splats(prefix + line + "\n") == []


# ---- prefixes ----

_STAMP = re.compile(r"^\[\s*\d+\.\d+\] ?")


@pytest.mark.parametrize(
    "prefix",
    [
        "",  # printk.time=0
        "[  123.456789] ",
        "<0>[  123.456789] ",  # dmesg -r
        "[  123.456789][    T1] ",  # CONFIG_PRINTK_CALLER
        "4,1234,123456789,-;",  # /dev/kmsg
    ],
)
@pytest.mark.parametrize("name", ["6.12/oops_null_deref_panic", "6.12/warning", "6.12/kasan", "hung_task.handwritten"])
def test_prefixes_are_tolerated(prefix: str, name: str) -> None:
    text = _log(name)
    restamped = "".join(prefix + _STAMP.sub("", line) + "\n" for line in _lines(text))
    assert [(s.kind, s.title, s.fatal, s.line) for s in find_splats(restamped)] == [
        (s.kind, s.title, s.fatal, s.line) for s in find_splats(text)
    ]


def test_crlf_console() -> None:
    text = _log("6.12/warning")
    assert find_splats(text.replace("\n", "\r\n")) == find_splats(text)


# ---- hand-made cases ----


def _splats(body: str) -> list[Splat]:
    return find_splats("\n".join(f"[   10.{i:06d}] {line}" for i, line in enumerate(body.strip("\n").split("\n"))))


TRACE_TAIL = """\
 do_syscall_64+0x82/0x160
 entry_SYSCALL_64_after_hwframe+0x76/0x7e
 </TASK>"""


def test_panic_on_warn_makes_the_warning_fatal() -> None:
    (splat,) = _splats(f"""
------------[ cut here ]------------
WARNING: CPU: 0 PID: 140 at mm/mmu_notifier.c:312 __mmu_notifier_release+0x1c1/0x1e0
Modules linked in: mmu_probe(O)
CPU: 0 UID: 0 PID: 140 Comm: fork_exit Tainted: G           O       6.12.0 #1
Call Trace:
 <TASK>
 exit_mmap+0x3a5/0x3e0
{TRACE_TAIL}
Kernel panic - not syncing: kernel: panic_on_warn set ...
CPU: 0 UID: 0 PID: 140 Comm: fork_exit Tainted: G           O       6.12.0 #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x5d/0x80
 panic+0x118/0x2f0
 check_panic_on_warn+0x4a/0x60
 __warn+0xa1/0x130
{TRACE_TAIL}
Kernel Offset: disabled
---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---
""")
    assert (splat.kind, splat.title, splat.fatal) == ("WARNING", "WARNING in __mmu_notifier_release", True)
    assert splat.text.endswith("---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---")


def test_hung_task_panic_makes_the_hung_task_fatal() -> None:
    (splat,) = _splats("""
INFO: task kworker/0:1:12 blocked for more than 120 seconds.
      Not tainted 6.12.0 #1
"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
task:kworker/0:1     state:D stack:0     pid:12    tgid:12    ppid:2      flags:0x00004000
Workqueue: events dmirror_work [test_hmm]
Call Trace:
 <TASK>
 __schedule+0x3e6/0xb60
 schedule+0x27/0xf0
 io_schedule+0x46/0x70
 folio_wait_bit_common+0x13d/0x350
 migrate_device_finalize+0x1c3/0x3a0
 dmirror_work+0x44/0x90 [test_hmm]
 process_one_work+0x17b/0x330
 worker_thread+0x2ce/0x3f0
 kthread+0xcf/0x100
 ret_from_fork+0x31/0x50
 ret_from_fork_asm+0x1a/0x30
 </TASK>
Kernel panic - not syncing: hung_task: blocked tasks
Kernel Offset: disabled
""")
    assert (splat.kind, splat.title, splat.fatal) == ("hung_task", "INFO: task hung in migrate_device_finalize", True)


def test_unrelated_lines_separate_a_splat_from_a_later_panic() -> None:
    got = _splats(f"""
------------[ cut here ]------------
WARNING: CPU: 1 PID: 97 at drivers/misc/mmu_probe/probe.c:214 mmu_probe_init+0x1d2/0xff0 [mmu_probe]
Call Trace:
 <TASK>
 do_one_initcall+0x5b/0x310
{TRACE_TAIL}
---[ end trace 0000000000000000 ]---
mmu_probe: loaded, 0 subscribers
Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
""")
    assert [(s.kind, s.title, s.fatal) for s in got] == [
        ("WARNING", "WARNING in mmu_probe_init", False),
        ("panic", "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)", True),
    ]
    assert got[0].text.endswith("---[ end trace 0000000000000000 ]---")


def test_qemu_ends_a_panic_cut_short() -> None:
    """The harness stops QEMU at a panic's first line: QEMU's own message after it is not the panic's."""
    panic = "[    1.800079] Kernel panic - not syncing: fault_panic: panicking on purpose at module load"
    qemu = "qemu-system-x86_64: terminating on signal 15 from pid 4242 (.venv/bin/python)"
    (splat,) = find_splats(f"{panic}\n{qemu}\n")
    assert (splat.kind, splat.title, splat.fatal) == (
        "panic",
        "kernel panic: fault_panic: panicking on purpose at module load",
        True,
    )
    assert splat.text == panic


def test_page_fault_oops_without_rip_is_named_by_its_trace() -> None:
    (splat,) = _splats("""
BUG: unable to handle page fault for address: ffffc90000a1b000
#PF: supervisor read access in kernel mode
#PF: error_code(0x0000) - not-present page
Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI
CPU: 1 UID: 0 PID: 131 Comm: hmm-tests Not tainted 6.12.0 #1
Call Trace:
 <TASK>
 ? __die_body.cold+0x19/0x27
 ? page_fault_oops+0x15a/0x2d0
 dmirror_do_read+0x5e/0x110 [test_hmm]
 </TASK>
""")
    assert (splat.kind, splat.title, splat.fatal) == (
        "oops",
        "BUG: unable to handle page fault in dmirror_do_read",
        False,
    )


def test_sleeping_in_atomic_is_a_nonfatal_bug() -> None:
    (splat,) = _splats("""
BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585
in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 0, name: swapper/1
preempt_count: 101, expected: 0
RCU nest depth: 0, expected: 0
CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Tainted: G           O       6.12.0 #1
Call Trace:
 <IRQ>
 dump_stack_lvl+0x5d/0x80
 __might_resched+0x151/0x1d0
 __mutex_lock+0x4e/0x9c0
 probe_timer_fn+0x23/0x70 [mmu_probe]
 call_timer_fn+0x27/0x130
 </IRQ>
 <TASK>
 pv_native_safe_halt+0xf/0x20
 </TASK>
""")
    assert (splat.kind, splat.title, splat.fatal) == (
        "BUG",
        "BUG: sleeping function called from invalid context in probe_timer_fn",
        False,
    )


def test_kcsan_data_race_is_named_by_both_sides_and_not_a_crash() -> None:
    (splat,) = _splats("""
==================================================================
BUG: KCSAN: data-race in mirror_access [mmu_probe] / mirror_show [mmu_probe]

write to 0xffff888004c2a0e8 of 8 bytes by task 81 on cpu 1:
 mirror_access+0x1a2/0x2f0 [mmu_probe]
 mirror_op_write+0x9c/0xd0 [mmu_probe]

read to 0xffff888004c2a0e8 of 8 bytes by task 82 on cpu 0:
 mirror_show+0x120/0x2a0 [mmu_probe]
 seq_read_iter+0x11f/0x4b0

Reported by Kernel Concurrency Sanitizer on:
CPU: 0 UID: 0 PID: 82 Comm: cat Tainted: G           O       6.12.117 #1
==================================================================
""")
    assert (splat.kind, splat.title, splat.fatal) == ("KCSAN", "KCSAN: data-race in mirror_access / mirror_show", False)


def test_hard_lockup() -> None:
    (splat,) = _splats("""
watchdog: Watchdog detected hard LOCKUP on cpu 1
Modules linked in: mmu_probe(O)
CPU: 1 UID: 0 PID: 140 Comm: spin_irqoff Tainted: G           O       6.12.0 #1
RIP: 0010:probe_spin_irqoff+0x21/0x40 [mmu_probe]
Call Trace:
 <NMI>
 ? watchdog_hardlockup_check+0x1a4/0x210
 </NMI>
 <TASK>
 probe_write+0x5c/0x90 [mmu_probe]
 </TASK>
""")
    assert (splat.kind, splat.title) == ("hard_lockup", "BUG: hard lockup in probe_spin_irqoff")


def test_kmemleak_debugfs_report() -> None:
    """/sys/kernel/debug/kmemleak: the same records as the console's, without the `kmemleak: ` prefix."""
    got = find_splats("""\
unreferenced object 0xffff888003c1a200 (size 64):
  comm "subscribe_close", pid 97, jiffies 4294669436
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 5d2b8a1f):
    __kmalloc_cache_noprof+0x2a1/0x330
    probe_subscribe+0x4e/0x120 [mmu_probe]
    probe_open+0x2b/0x60 [mmu_probe]
unreferenced object 0xffff888003c1a280 (size 32):
  comm "subscribe_close", pid 97, jiffies 4294669437
  backtrace (crc 1e2f3a4b):
    __kmalloc_noprof+0x1f1/0x3c0
    kstrdup+0x34/0x60
    probe_set_name+0x1c/0x50 [mmu_probe]
""")
    assert [(s.kind, s.title, s.line) for s in got] == [
        ("kmemleak", "memory leak in probe_subscribe", 1),
        ("kmemleak", "memory leak in probe_set_name", 9),
    ]


def test_text_is_capped() -> None:
    frames = "\n".join(f" probe_recurse+0x{i:x}/0x400 [mmu_probe]" for i in range(MAX_LINES * 2))
    got = _splats(f"""
------------[ cut here ]------------
WARNING: CPU: 0 PID: 1 at drivers/misc/mmu_probe/probe.c:9 probe_recurse+0x1d/0x400 [mmu_probe]
Call Trace:
 <TASK>
{frames}
 </TASK>
""")
    assert len(got) == 1
    assert len(got[0].text.split("\n")) == MAX_LINES


def test_strip_prefix() -> None:
    assert strip_prefix("<4>[   12.345678]  dump_stack_lvl+0x5d/0x80\r\n") == " dump_stack_lvl+0x5d/0x80"
    assert strip_prefix("[   12.345678][  T140] WARNING: CPU: 0") == "WARNING: CPU: 0"
    assert strip_prefix("6,339,5140900,-;Run /init as init process") == "Run /init as init process"
    assert strip_prefix("init: no prefix") == "init: no prefix"


def test_is_allowed() -> None:
    (splat,) = find_splats(_log("6.12/kasan"))
    assert is_allowed(splat, [r"^KASAN: slab-use-after-free \w+ in use_after_free_write$"])
    assert is_allowed(splat, ["WARNING in foo", "in use_after_free_write"])
    assert not is_allowed(splat, [])
    assert not is_allowed(splat, ["^WARNING", "subscribe"])


def test_logs_back_to_back() -> None:
    """One console over several boots: each splat is found as in its own log, none swallows the next boot."""
    text, expected, offset = "", [], 0
    for name in sorted(GOLDEN):
        log = _log(name)
        expected += [(s.kind, s.title, s.fatal, s.line + offset, s.text) for s in find_splats(log)]
        text += log
        offset += len(_lines(log))
    assert [(s.kind, s.title, s.fatal, s.line, s.text) for s in find_splats(text)] == expected
