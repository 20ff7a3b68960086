"""Soft-RoCE (rdma_rxe) in the guest: its link over eth0, whether it can do on-demand paging (ODP), and what
its ODP memory regions see, counted with kprobes on the driver's own functions.

Since Linux 6.15 an ODP MR of rxe is an mmu_interval_notifier (drivers/infiniband/sw/rxe/rxe_odp.c:
`ib_umem_odp_get(..., &rxe_mn_ops)`): `rxe_ib_invalidate_range()` receives every invalidation of its range,
and a device access to a page it dropped faults through `ib_umem_odp_map_dma_and_lock()` (drivers/infiniband/
core/umem_odp.c, exported, called by rxe_odp.c:rxe_odp_do_pagefault_and_lock with `fault` true, and once with
`fault` false at registration: rxe_odp_init_pages snapshots what is already mapped). The exported function is
the sturdier probe point: in 7.3's build rxe's own static helper is `rxe_odp_do_pagefault_and_lock.isra.0` in
kallsyms, a name the compiler chose.
"""

from __future__ import annotations

import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field

from harness.kernel.build import KernelBuild
from harness.kernel.source import KernelTree
from harness.observe import kprobe
from harness.vm.ssh import SSH

DEVICE = "rxe0"
NETDEV = "eth0"
MODULE = "rdma_rxe"
ODP_SOURCE = "drivers/infiniband/sw/rxe/rxe_odp.c"  # added in 6.15 ("RDMA/rxe: Add page invalidation support")
INVALIDATE = "rxe_ib_invalidate_range"
ODP_MAP = "ib_umem_odp_map_dma_and_lock"
ODP_UNMAP = "ib_umem_odp_unmap_dma_pages"  # what an invalidation that acts does (exported, ib_core)
EVENT_AWARE = "rxe_odp_write_protect_only"  # configs/patches/rxe-odp-honour-event.patch: rxe skips write-protects


class RxeError(Exception):
    """rxe0 could not be brought up: the message says which step failed and what it printed."""


def link_up(ssh: SSH, build: KernelBuild, timeout: float = 30) -> str:
    """rxe0 over eth0 (modprobe rdma_rxe, `rdma link add`), once per guest; its `rdma link show` line once the
    port is ACTIVE."""
    if not ssh.run(["test", "-d", f"/sys/class/infiniband/{DEVICE}"]).ok:
        # Before 6.15 rxe computes its ICRC through the crypto API: rxe_icrc.c:rxe_icrc_init asks for
        # crypto_alloc_shash("crc32"), whose module the kernel would load by request_module("crypto-crc32"), but
        # the initramfs has no /sbin/modprobe for it, and `rdma link add` fails with ENOENT. Load it by its alias.
        values = build.config_values()
        for symbol, module in (("RDMA_RXE", MODULE), ("CRYPTO_CRC32", "crypto-crc32")):
            if values.get(symbol) != "m":
                continue
            loaded = ssh.run(["modprobe", module])
            if not loaded.ok:
                raise RxeError(f"modprobe {module} failed: {(loaded.stderr or loaded.stdout).strip()}")
        added = ssh.run(["rdma", "link", "add", DEVICE, "type", "rxe", "netdev", NETDEV])
        if not added.ok:
            raise RxeError(f"rdma link add {DEVICE} type rxe netdev {NETDEV} failed: "
                           f"{(added.stderr or added.stdout).strip()}")
    deadline = time.monotonic() + timeout
    while True:
        shown = ssh.run(["rdma", "link", "show", f"{DEVICE}/1"])
        if shown.ok and re.search(r"\bstate ACTIVE\b", shown.stdout):
            return shown.stdout.strip()
        if time.monotonic() > deadline:
            raise RxeError(f"{DEVICE}/1 is not ACTIVE after {timeout:g} s: {(shown.stdout or shown.stderr).strip()}")
        time.sleep(0.5)


def odp_unavailable(build: KernelBuild, tree: KernelTree, caps: dict) -> str | None:
    """Why rxe on this kernel cannot do ODP (a skip reason), or None when rxe0 reports it can.

    The device's own capability (`ibv_query_device_ex` odp_caps, what rxe.c:rxe_init_device_param sets) is
    the signal; the tree and the config say why it is missing. A kernel that has rxe_odp.c and
    INFINIBAND_ON_DEMAND_PAGING but whose device reports no ODP is a failure, not a skip: RxeError.
    """
    if caps.get("odp"):
        return None
    if not build.has("INFINIBAND_ON_DEMAND_PAGING"):
        return ("CONFIG_INFINIBAND_ON_DEMAND_PAGING is not set in this kernel (it selects MMU_NOTIFIER: the "
                "notifier-off axis turns it off), so rxe0 reports no ODP capability")
    if not (tree.path / ODP_SOURCE).exists():
        return (f"rxe0 reports no on-demand paging (odp_caps.general_caps={caps.get('odp_general_caps')}, no "
                f"IBV_ODP_SUPPORT): soft-RoCE has ODP since Linux 6.15 ({ODP_SOURCE}), which this "
                f"{tree.version} tree lacks")
    raise RxeError(f"this {tree.version} tree has {ODP_SOURCE} and CONFIG_INFINIBAND_ON_DEMAND_PAGING, yet rxe0 "
                   f"reports no ODP capability: {caps}")


def odp_probes(build: KernelBuild) -> list[kprobe.CallProbe]:
    """kprobes on rxe's invalidation callback (the range and its event, at this build's offsets of struct
    mmu_notifier_range) and on the ODP fault path, with its `fault` flag and its return value."""
    layout = kprobe.range_layout(build)
    o, s = layout.offsets, layout.sizes
    return [
        # rxe_ib_invalidate_range(struct mmu_interval_notifier *mni, const struct mmu_notifier_range *range, ...)
        kprobe.CallProbe("rxe_invalidate", INVALIDATE, (
            f"start=+{o['start']}($arg2):x64", f"end=+{o['end']}($arg2):x64",
            f"event=+{o['event']}($arg2):s{8 * s['event']}")),
        # ib_umem_odp_map_dma_and_lock(umem_odp, user_virt, bcnt, access_mask, bool fault)
        kprobe.CallProbe("odp_map", ODP_MAP, ("va=$arg2:x64", "bcnt=$arg3:u64", "fault=$arg5:u8")),
        kprobe.CallProbe("odp_map_ret", ODP_MAP, ("ret=$retval:s32",), ret=True),
        # ib_umem_odp_unmap_dma_pages(umem_odp, u64 start_offset, u64 end): the invalidation acted on the MR
        kprobe.CallProbe("odp_unmap", ODP_UNMAP, ("start=$arg2:x64", "end=$arg3:x64")),
    ]


@dataclass
class OdpCounts:
    """What rxe's ODP saw while a program ran."""

    invalidations: int = 0  # calls of rxe_ib_invalidate_range
    acted: int = 0  # of those, the ones that unmapped DMA pages (ib_umem_odp_unmap_dma_pages)
    events: Counter[str] = field(default_factory=Counter)  # the same, by the range's event name
    faults: int = 0  # device page faults: ib_umem_odp_map_dma_and_lock(..., fault=true)
    snapshots: int = 0  # registration's snapshot of present pages (fault=false)
    fault_errors: int = 0  # of the calls, those that returned an error (e.g. -EFAULT: nothing mapped there)

    @classmethod
    def from_calls(cls, calls: list[kprobe.Call], names: list[str]) -> OdpCounts:
        counts = cls()
        for c in calls:
            if c.event == "rxe_invalidate":
                counts.invalidations += 1
                e = c.fields.get("event", -1)
                counts.events[names[e].removeprefix("MMU_NOTIFY_") if 0 <= e < len(names) else str(e)] += 1
            elif c.event == "odp_map" and c.fields.get("fault"):
                counts.faults += 1
            elif c.event == "odp_map":
                counts.snapshots += 1
            elif c.event == "odp_unmap":
                counts.acted += 1
            elif c.event == "odp_map_ret" and c.fields.get("ret", 0) < 0:
                counts.fault_errors += 1
        return counts

    def as_dict(self) -> dict:
        return {"invalidations": self.invalidations, "acted": self.acted, "events": dict(self.events),
                "faults": self.faults,
                "snapshots": self.snapshots, "fault_errors": self.fault_errors}


def event_aware(tree: KernelTree) -> bool:
    """Whether this tree's rxe skips write-protect invalidations of a read-only ODP MR (the event-aware patch)."""
    source = tree.path / ODP_SOURCE
    return source.exists() and EVENT_AWARE in source.read_text()


def gid_of_ipv4(address: str) -> str:
    """The RoCE v2 GID of an IPv4 address (IPv4-mapped IPv6), as rxe_odp prints GIDs: 8 groups of 4 hex digits."""
    octets = [int(x) for x in address.split(".")]
    return "0000:0000:0000:0000:0000:ffff:" + f"{octets[0]:02x}{octets[1]:02x}:{octets[2]:02x}{octets[3]:02x}"


def ipv4_of(ssh: SSH, netdev: str = NETDEV) -> str | None:
    """The netdev's first IPv4 address, from busybox `ip -4 addr show`."""
    shown = ssh.run(["ip", "-4", "addr", "show", "dev", netdev])
    m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", shown.stdout)
    return m[1] if m else None


def shell_line(argv: list[str]) -> str:
    """argv as one shell-quoted line (for a command started in the background)."""
    return " ".join(shlex.quote(a) for a in argv)
