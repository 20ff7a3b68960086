"""Titles for kernel splats: stable one-line names in syzkaller's style ("WARNING in foo").

No addresses, PIDs or durations: the culprit is the first reliable frame of the call trace that is not the
reporting or exception machinery (the skip lists below), else the RIP, with compiler clone suffixes cut.
"""

from __future__ import annotations

import re

_FRAME = re.compile(r"^\s*(\? )?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_RIP = re.compile(r"^RIP: 0010:([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
# arm64's registers of the faulting context (arch/arm64/kernel/process.c:__show_regs): the pc, and the link register
_PC_LR = re.compile(r"^(pc|lr) : ([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
# Library routines the pc of a bad access sits in, for its caller: arm64's memcpy is a leaf function, so its caller
# is in lr only, not in the call trace ("__pi_memcpy_generic+0x128 (P)", then the caller's caller)
_LEAF = re.compile(r"^(?:__pi_)?(?:__)?(?:mem(?:cpy|set|move|cmp)|str\w+|copy_(?:to|from)_user|__arch_copy_\w+)\w*$")
_SYMBOL = re.compile(r"^([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
# Compiler clones: the same function under another name from one build to the next.
_CLONE = re.compile(r"\.(?:cold|constprop|isra|part|llvm|lto_priv|localalias)(?:\.\w+)?")

# Frames of the reporting and exception machinery: never the culprit.
_SKIP_BASE = (
    r"__dump_stack|dump_stack|dump_stack_lvl|show_stack|show_trace_log_lvl|show_regs|__show_regs|print_report"
    r"|print_address_description|report_bug|handle_bug|__warn|warn_slowpath_fmt|__warn_printk|exc_\w+|asm_exc_\w+"
    r"|__die\w*|die|die_addr|do_trap|do_error_trap|oops_begin|oops_end|page_fault_oops|kernelmode_fixup_or_oops"
    r"|\w*bad_area\w*|do_user_addr_fault|handle_page_fault|do_kern_addr_fault|panic|vpanic|nmi_\w+|__nmi_\w+"
    r"|default_do_nmi|arch_trigger_cpumask_backtrace|trigger_\w+_backtrace|__might_\w+|might_\w+|__cant_\w+"
)
# Waiting, locking, timers and interrupts: where hung, stalled or deadlocked code sits, not what is wrong.
_SKIP_WAIT = (
    r"|__schedule|__schedule_bug|schedule\w*|preempt_schedule\w*|io_schedule\w*|__mutex_\w+|mutex_\w+"
    r"|rwsem_\w+|__rwsem\w*"
    r"|down|down_\w+|__down\w*|up_\w+|_raw_\w+|do_raw_\w+|queued_\w+|native_queued_\w+|__pv_queued_\w+"
    r"|wait_for_completion\w*|__wait_for_common|wait_for_common\w*|\w*wait_event\w*|schedule_timeout\w*"
    r"|msleep\w*|usleep_range\w*|rt_mutex\w*|__rt_mutex\w*|folio_wait\w*|__folio_lock\w*|lock_acquire\w*"
    r"|__lock_acquire|lock_release|lock_acquired|lock_contended|validate_chain|check_noncircular|check_prev_add"
    r"|check_prevs_add|check_deadlock|print_circular_bug|print_deadlock_bug|print_usage_bug|mark_lock\w*"
    r"|lockdep_\w+|lock_is_held\w*|rcu_\w+|__rcu_\w+|cpu_relax|delay_tsc|delay_loop|delay_halt\w*|__const_udelay"
    r"|__udelay|udelay|mdelay|\w*hrtimer\w*|tick_\w+|update_process_times|sched_tick|irq_exit\w*|__irq_exit\w*"
    r"|__do_softirq|handle_softirqs|sysvec_\w+|__sysvec_\w+|asm_sysvec_\w+|common_interrupt|asm_common_interrupt"
    r"|watchdog_\w+|softlockup_fn|lockdep_\w+"
)
_SKIP_ALLOC = (
    r"|__?kmalloc\w*|kmem_cache_alloc\w*|__kmem_cache_alloc\w*|slab_alloc\w*|slab_post_alloc_hook|kmemleak_\w+"
    r"|__?kzalloc\w*|__?kcalloc\w*|__?krealloc\w*|__?kvmalloc\w*|kvzalloc\w*|__?vmalloc\w*|__?vzalloc\w*"
    r"|alloc_pages\w*|__alloc_pages\w*|kmalloc_trace\w*|kmalloc_node\w*|__kmalloc_cache\w*|kstrdup\w*|kmemdup\w*"
)
_SKIP = {
    "base": re.compile(rf"^(?:{_SKIP_BASE})$"),
    "wait": re.compile(rf"^(?:{_SKIP_BASE}{_SKIP_WAIT})$"),
    "ubsan": re.compile(rf"^(?:{_SKIP_BASE}|__?ubsan_\w+|ubsan_\w+)$"),
    "kasan": re.compile(rf"^(?:{_SKIP_BASE}|__?kasan_\w+|kasan_\w+|__asan_\w+|check_region_inline)$"),
    "alloc": re.compile(rf"^(?:{_SKIP_BASE}{_SKIP_ALLOC})$"),
}


def _clean(symbol: str) -> str:
    return _CLONE.sub("", symbol)


def _symbol(text: str | None) -> str | None:
    """`foo+0x12/0x34` -> `foo`."""
    m = _SYMBOL.match(text or "")
    return _clean(m.group(1)) if m else None


def _rip(msgs: list[str]) -> str | None:
    """The function of the first kernel-mode RIP line (CS 0010; 0033 is user space), or of arm64's pc line (its lr's
    when the pc is in a leaf library routine such as memcpy)."""
    arm64: dict[str, str] = {}
    for msg in msgs:
        m = _RIP.match(msg)
        if m:
            return _clean(m.group(1))
        if (m := _PC_LR.match(msg)) and m.group(1) not in arm64:
            arm64[m.group(1)] = _clean(m.group(2))
    if "pc" in arm64 and _LEAF.match(arm64["pc"]) and "lr" in arm64:
        return arm64["lr"]
    return arm64.get("pc")


def _trace(msgs: list[str], skip: re.Pattern[str], task_only: bool = False, start: str = "call trace:") -> str | None:
    """The first meaningful frame of the first stack trace: reliable (no `?`) and not in `skip`.

    When the trace has no reliable frame at all (CONFIG_UNWINDER_GUESS), the first unreliable one.
    task_only: ignore frames in <IRQ>/<NMI> sections (the watchdog or NMI that caught a stuck CPU).
    """
    in_trace = False
    in_irq = False
    any_reliable = False
    guess: str | None = None
    for msg in msgs:
        s = msg.strip()
        if not in_trace:
            in_trace = s.lower().removeprefix("kmemleak: ").strip().startswith(start)
            continue
        if s in ("<IRQ>", "<NMI>", "<#DF>", "<SOFTIRQ>"):
            in_irq = True
        elif s in ("</IRQ>", "</NMI>", "</#DF>", "</SOFTIRQ>", "<TASK>"):
            in_irq = False
        elif s == "</TASK>":
            break
        m = _FRAME.match(msg.removeprefix("kmemleak: "))
        if not m or (task_only and in_irq):
            continue
        any_reliable = any_reliable or not m.group(1)
        name = _clean(m.group(2))
        if skip.match(name):
            continue
        if not m.group(1):
            return name
        guess = guess or name
    return None if any_reliable else guess


def _culprit(msgs: list[str], skip: str, rip_first: bool, task_only: bool = False) -> str | None:
    pattern = _SKIP[skip]
    rip = _rip(msgs)
    if rip_first and rip and not pattern.match(rip):
        return rip
    return _trace(msgs, pattern, task_only) or rip


def _without_gp_kthread(msgs: list[str]) -> list[str]:
    """An RCU stall without the stack of its grace-period kthread: the starved victim, not the culprit."""
    start = next((i for i, msg in enumerate(msgs) if msg.startswith("rcu: RCU grace-period kthread stack dump")), None)
    if start is None:
        return msgs
    end = next((i for i in range(start, len(msgs)) if msgs[i].strip() == "</TASK>"), len(msgs) - 1)
    return msgs[:start] + msgs[end + 1 :]


def _lockdep_acquire(msgs: list[str]) -> str | None:
    """The function taking the lock that closes the cycle: `... at: foo+0x1c/0x60` after "is trying to acquire"."""
    seen = False
    for msg in msgs:
        if "is trying to acquire lock" in msg:
            seen = True
        elif seen and ", at: " in msg:
            return _symbol(msg.split(", at: ", 1)[1].strip())
    return None


def _scrub(text: str) -> str:
    """Drop what varies from run to run: addresses, `key=value` numbers, `[comm:pid]`."""
    text = re.sub(r"([\w.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?", r"\1", text)
    text = re.sub(r"\s*\b[\w-]+=(?:0x)?[0-9a-fA-F]+\b", "", text)
    text = re.sub(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-f]{8,}\b", "", text)
    text = re.sub(r"\s*\[[^\]\s]+:\d+\]", "", text)
    return re.sub(r"\s+", " ", text).strip(" ,:;")


def _phrase(text: str) -> str:
    """The head of a message, before its variable part: "scheduling while atomic: insmod/1/0x2" -> ..."""
    return _scrub(re.split(r": |, | at | in process | - |!| \(", text, maxsplit=1)[0])


def _in(prefix: str, func: str | None) -> str:
    return f"{prefix} in {func}" if func else prefix


def title(kind: str, rule: str, m: re.Match[str], msgs: list[str]) -> str:
    """The one-line title of a splat: its header's rule applied to the header's match and the body's lines."""
    if rule == "panic":
        return f"kernel panic: {_scrub(m.group(1))}".rstrip(": ")
    if rule == "panic_in":
        return _in(f"PANIC: {m.group(1)}", _culprit(msgs, "base", rip_first=True))
    if rule == "warning":
        return _in("WARNING", _symbol(m.group(1)) or _culprit(msgs, "base", rip_first=True))
    if rule == "kernel_bug":
        func = _culprit(msgs, "base", rip_first=True)
        return f"kernel BUG in {func}" if func else f"kernel BUG at {_scrub(m.group(1))}"
    if rule == "oops":
        return _in(_phrase(m.group(1)), _culprit(msgs, "base", rip_first=True))
    if rule == "arm64_fault":
        return _in(f"Unable to handle kernel {m.group(1)}", _culprit(msgs, "base", rip_first=True))
    if rule == "bug":
        if kind == "oops":
            return _in(f"BUG: {m.group(1)}", _culprit(msgs, "base", rip_first=True))
        return _in(f"BUG: {_phrase(m.group(1))}", _culprit(msgs, "wait", rip_first=False))
    if rule == "kasan":
        access = next((w for msg in msgs[1:4] for w in ("Read", "Write") if msg.startswith(f"{w} of size ")), None)
        what = f"KASAN: {m.group(1)} {access}" if access else f"KASAN: {m.group(1)}"
        return _in(what, _symbol(m.group(2)) or _culprit(msgs, "kasan", rip_first=False))
    if rule == "kcsan":  # "BUG: KCSAN: data-race in a / b": both sides name it
        sides = " / ".join(_symbol(g) or g for g in m.groups()[1:] if g)
        return f"KCSAN: {m.group(1)} in {sides}"
    if rule == "kfence":
        return _in(f"KFENCE: {m.group(1).strip()}", _symbol(m.group(2)) or _culprit(msgs, "base", rip_first=False))
    if rule == "ubsan":
        where = _trace(msgs, _SKIP["ubsan"]) or _symbol(m.group(2)) or re.sub(r"(?::\d+)+$", "", m.group(2))
        return _in(f"UBSAN: {m.group(1)}", where)
    if rule == "deadlock":
        return _in("possible deadlock", _lockdep_acquire(msgs) or _culprit(msgs, "wait", rip_first=False))
    if rule == "lockdep":
        what = re.sub(r"(?: detected)?!$", "", m.group(1)).removesuffix(" detected")
        what = re.sub(r"^\S+ (still has locks held)", r"\1", what)
        return _in(what, _culprit(msgs, "wait", rip_first=False))
    if rule == "hung_task":
        return _in("INFO: task hung", _culprit(msgs, "wait", rip_first=False))
    if rule == "rcu_stall":
        return _in(
            "INFO: rcu detected stall", _culprit(_without_gp_kthread(msgs), "wait", rip_first=True, task_only=True)
        )
    if rule == "soft_lockup":
        return _in("BUG: soft lockup", _culprit(msgs, "wait", rip_first=True, task_only=True))
    if rule == "hard_lockup":
        return _in("BUG: hard lockup", _culprit(msgs, "wait", rip_first=True, task_only=True))
    if rule == "kmemleak":
        return _in("memory leak", _trace(msgs, _SKIP["alloc"], start="backtrace"))
    if rule == "kmemleak_summary":
        return "kmemleak: suspected memory leaks"
    raise AssertionError(f"no title rule {rule}")
