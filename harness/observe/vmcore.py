"""A vmcore read with drgn (PyPI): the automatic analysis a crash or a hang leaves beside its dump, and the
command that opens drgn on it (`harness post-mortem`).

The analysis (analysis.txt next to the vmcore, harness/vm/vmcore.py writes both):
  - the task that panicked, its stack with each frame's function and source line;
  - for a hang (no panic), every task in D state (uninterruptible), each with its stack;
  - the mm of each of those tasks: its mmu_notifier subscriptions, classic (`mm->notifier_subscriptions->list`,
    each by its ops) and interval (the `itree`, each with its range and ops), and the sequence numbers;
  - the probe module's state, where it is loaded: its counters, subscriptions and model mirrors
    (guest/probe/mmu_probe.c: `subs`, `mirrors`).
Each part is best effort: what drgn cannot read is said in the text, never a reason to lose the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.vm.vmcore import INFO, VMCORE

ANALYSIS = "analysis.txt"
MOST_FRAMES = 24
MOST_TASKS = 8


def program(vmcore: Path) -> Any:
    """A drgn Program of the dump, with the vmlinux and modules kept beside it."""
    import drgn

    # drgn warns of every kept module the guest never loaded, and of the flattened format: noise in a test's output
    logging.getLogger("drgn").setLevel(logging.ERROR)
    # The guest's platform is the host's (x86_64 on x86_64): QEMU leaves the kdump header's utsname.machine empty,
    # and libkdumpfile cannot tell the architecture otherwise ("KDUMP_ATTR_ARCH_NAME: Key has no value")
    prog = drgn.Program(drgn.host_platform)
    prog.set_core_dump(str(vmcore))  # QEMU writes makedumpfile's flattened format: drgn reads it
    info = json.loads((vmcore.parent / INFO).read_text())
    files = [info["vmlinux"], *(str(vmcore.parent / "modules" / name) for name in info.get("modules", []))]
    with contextlib.suppress(drgn.MissingDebugInfoError):  # a module never loaded, say: the rest is read
        prog.load_debug_info(files)
    return prog


def analyse(vmcore: Path) -> str:
    """The analysis of one dump, as text (and written to analysis.txt beside it)."""
    lines: list[str] = [f"vmcore: {vmcore}"]
    try:
        prog = program(vmcore)
    except Exception as e:  # whatever drgn raises, the analysis says it and ends
        lines.append(f"drgn could not open it: {type(e).__name__}: {e}")
        return _written(vmcore, lines)
    tasks = _tasks_of_interest(prog, lines)
    for task in tasks[:MOST_TASKS]:
        lines += _stack(prog, task)
        lines += _subscriptions(prog, task)
    lines += _probe(prog)
    return _written(vmcore, lines)


def _written(vmcore: Path, lines: list[str]) -> str:
    text = "\n".join(lines) + "\n"
    (vmcore.parent / ANALYSIS).write_text(text)
    return text


def _tasks_of_interest(prog: Any, lines: list[str]) -> list[Any]:
    """The task that panicked; else (a hang) every task in D state."""
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import task_state_to_char

    try:
        crashed = prog.crashed_thread().object
        lines.append(f"panicked: pid {int(crashed.pid)} ({_comm(crashed)})")
        return [crashed]
    except Exception as e:  # drgn found none; kernel/panic.c's panic_cpu says which CPU panicked, if one did
        why = f"{type(e).__name__}: {e}"
    try:
        from drgn.helpers.linux.sched import cpu_curr

        cpu = int(prog["panic_cpu"].counter)
        if cpu >= 0:  # PANIC_CPU_INVALID (-1): no panic
            crashed = cpu_curr(prog, cpu)
            lines.append(f"panicked: pid {int(crashed.pid)} ({_comm(crashed)}) on CPU {cpu}")
            return [crashed]
    except Exception as e:
        why += f"; panic_cpu: {type(e).__name__}: {e}"
    lines.append(f"no panicking task ({why}); the tasks in D state:")
    blocked = [t for t in for_each_task(prog) if task_state_to_char(t) == "D"]
    lines.append(f"  {len(blocked)} task(s) in D state: " + ", ".join(f"{int(t.pid)} ({_comm(t)})" for t in blocked))
    return blocked


def _comm(task: Any) -> str:
    return bytes(task.comm.string_()).decode(errors="replace")


def _stack(prog: Any, task: Any) -> list[str]:
    out = [f"stack of pid {int(task.pid)} ({_comm(task)}):"]
    try:
        for n, frame in enumerate(prog.stack_trace(task)):
            if n == MOST_FRAMES:
                out.append("    ...")
                break
            try:
                source = "{}:{}".format(*frame.source()[:2])
            except LookupError:
                source = ""
            out.append(f"    #{n} {frame.name or hex(frame.pc)}" + (f" ({source})" if source else ""))
    except Exception as e:
        out.append(f"    not read: {type(e).__name__}: {e}")
    return out


def _subscriptions(prog: Any, task: Any) -> list[str]:
    """The task's mm's notifier subscriptions (include/linux/mmu_notifier.h, mm/mmu_notifier.c)."""
    from drgn.helpers.linux.list import hlist_for_each_entry
    from drgn.helpers.linux.rbtree import rbtree_inorder_for_each_entry

    mm = task.mm
    if not mm:
        return ["  its mm: none (a kernel thread)"]
    subs = mm.notifier_subscriptions
    if not subs:
        return ["  its mm's notifier subscriptions: none"]
    out = [f"  its mm's notifier subscriptions (invalidate_seq {int(subs.invalidate_seq)}, active ranges "
           f"{int(subs.active_invalidate_ranges)}):"]
    try:
        for mn in hlist_for_each_entry("struct mmu_notifier", subs.list.address_of_(), "hlist"):
            out.append(f"    classic: ops {_symbol(prog, mn.ops)}")
        for ni in rbtree_inorder_for_each_entry("struct mmu_interval_notifier", subs.itree.rb_root.address_of_(),
                                                "interval_tree.rb"):
            tree = ni.interval_tree
            out.append(f"    interval: [{int(tree.start):#x}, {int(tree.last) + 1:#x}) ops {_symbol(prog, ni.ops)} "
                       f"seq {int(ni.invalidate_seq)}")
    except Exception as e:
        out.append(f"    not read: {type(e).__name__}: {e}")
    return out


def _symbol(prog: Any, pointer: Any) -> str:
    try:
        return str(prog.symbol(int(pointer)).name)
    except LookupError:
        return hex(int(pointer))


def _probe(prog: Any) -> list[str]:
    """guest/probe/mmu_probe.c's state, where the module is loaded and its debug info read."""
    from drgn.helpers.linux.list import list_for_each_entry

    try:
        counters = {name: int(prog[name]) for name in ("starts", "ends", "releases", "invalidates", "unmatched_ends",
                                                         "after_release")}
    except (KeyError, LookupError):
        return ["probe module (mmu_probe): not loaded, or its debug info not read"]
    out = ["probe module (mmu_probe): " + ", ".join(f"{k} {v}" for k, v in counters.items())]
    try:
        for sub in list_for_each_entry("struct subscription", prog["subs"].address_of_(), "node"):
            out.append(f"  watching pid {int(sub.pid)}" + (" (released)" if sub.released else ""))
        for m in list_for_each_entry("struct mirror", prog["mirrors"].address_of_(), "node"):
            st = m.st
            out.append(f"  mirror {int(m.id)} of pid {int(m.pid)} [{int(m.start):#x}, {int(m.end):#x}): "
                       f"received {int(st.received)}, acted {int(st.acted)}, skipped {int(st.skipped)}, "
                       f"faults {int(st.faults)}, refaults {int(st.refaults)}, stale {int(st.stale)}")
    except Exception as e:
        out.append(f"  not read: {type(e).__name__}: {e}")
    return out


def summary(vmcore: Path) -> dict[str, str]:
    """What a test's result keeps of its VM's dump: where it and its analysis are, its size, what the dump cost,
    and the analysis's first lines (analysed now if it was not)."""
    analysis = vmcore.parent / ANALYSIS
    text = analysis.read_text() if analysis.exists() else analyse(vmcore)
    info = json.loads((vmcore.parent / INFO).read_text())
    return {"vmcore": str(vmcore), "analysis": str(analysis), "bytes": str(info["bytes"]),
            "dump_s": str(info["dump_s"]), "head": "\n".join(text.splitlines()[1:6])}


def drgn_argv(vmcore: Path) -> list[str]:
    """drgn on the dump, interactive, with the vmlinux and modules kept beside it."""
    info = json.loads((vmcore.parent / INFO).read_text())
    symbols = [info["vmlinux"], *(str(vmcore.parent / "modules" / name) for name in info.get("modules", []))]
    return [sys.executable, "-m", "drgn", "-c", str(vmcore), *(a for s in symbols for a in ("-s", s))]


def dumps_in(result: Path) -> Iterator[Path]:
    """The vmcores under a results directory (a run, a matrix cell, a VM's directory) or the one named; links
    are not followed, and what cannot be read is passed over."""
    if result.is_file():
        yield result
        return
    for top, _dirs, files in sorted(os.walk(result, followlinks=False)):
        if VMCORE in files:
            yield Path(top) / VMCORE


if __name__ == "__main__":  # python -m harness.observe.vmcore VMCORE: the analysis alone
    print(analyse(Path(sys.argv[1])), end="")
