"""The event workloads of configs/expectations/events.yaml in a guest: what a case needs set up first
(swap, KSM, a filesystem that writes back, two NUMA nodes). One run of a case, checked: cases.py.

Setups change the shared guest, so each one is undone after the test that asked for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.vm.ssh import SSH

KSM = "/sys/kernel/mm/ksm"
WRITEBACK_MNT = "/mnt/wb"


class Unavailable(Exception):
    """The guest cannot provide what a case needs; the message says why (and what would fix it)."""


class GuestSetup:
    """Provides a case's needs in the guest and undoes them, last first."""

    def __init__(self, ssh: SSH):
        self.ssh = ssh
        self.undo: list[str] = []

    def sh(self, script: str) -> str:
        return self.ssh.run(["sh", "-ec", script], check=True, timeout=120).stdout

    def provide(self, need: str) -> None:
        getattr(self, f"_{need}")()

    def restore(self) -> None:
        while self.undo:
            self.ssh.run(["sh", "-c", self.undo.pop()], timeout=120)

    def _swap(self) -> None:
        # MADV_PAGEOUT unmaps anonymous pages only once they have a swap slot: swap on zram0 (CONFIG_ZRAM).
        if "/dev/zram0" in self.sh("cat /proc/swaps"):
            return
        if not self.ssh.run(["test", "-e", "/sys/block/zram0"]).ok:
            raise Unavailable("no /sys/block/zram0 for swap: the kernel needs CONFIG_ZRAM")
        self.sh("echo 64M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null && swapon /dev/zram0")
        self.undo.append("swapoff /dev/zram0; echo 1 > /sys/block/zram0/reset")

    def _ksm(self) -> None:
        if not self.ssh.run(["test", "-d", KSM]).ok:
            raise Unavailable(f"no {KSM}: the kernel needs CONFIG_KSM")
        old = self.sh(f"cat {KSM}/run {KSM}/sleep_millisecs {KSM}/pages_to_scan").split()
        # Fast scans, so that a few dozen pages merge within seconds under TCG.
        self.sh(f"echo 20 > {KSM}/sleep_millisecs && echo 1000 > {KSM}/pages_to_scan && echo 1 > {KSM}/run")
        self.undo.append(f"echo {old[0]} > {KSM}/run; echo {old[1]} > {KSM}/sleep_millisecs; "
                         f"echo {old[2]} > {KSM}/pages_to_scan")

    def _ksm_unmerged(self) -> None:
        # ksm_tests -U asserts that the system-wide pages_shared and pages_sharing are 0 once its own pages
        # unmerged (check_ksm_unmerge -> assert_ksm_pages_count(0)), so pages KSM merged for an earlier test
        # on this guest fail it (2 of 2 fresh-clone make test runs on three workers). run=2 unmerges them all.
        if self.ssh.run(["test", "-d", KSM]).ok:
            self.sh(f"echo 2 > {KSM}/run")

    def _ksm_every_page_every_scan(self) -> None:
        # Since 6.7 KSM's smart scan (on by default) skips a page that failed to merge for a few scans
        # (mm/ksm.c:should_skip_rmap_item); a test that waits a fixed number of full scans for two pages to
        # meet then fails at random (18 of 40 runs of ksm_tests -N -m 1 on 6.12). Older trees lack the knob.
        knob = f"{KSM}/smart_scan"
        if self.ssh.run(["test", "-e", knob]).ok:
            old = self.sh(f"cat {knob}").strip()
            self.sh(f"echo 0 > {knob}")
            self.undo.append(f"echo {old} > {knob}")

    def _writeback_fs(self) -> None:
        # tmpfs never writes back (noop_backing_dev_info); ext2 on a second zram device does.
        if not self.ssh.run(["grep", "-qw", "ext2", "/proc/filesystems"]).ok:
            raise Unavailable("no filesystem that writes back in this kernel (only tmpfs): needs CONFIG_EXT2_FS=y "
                              "(with CONFIG_BLOCK and CONFIG_ZRAM, already in base.config)")
        dev = self.sh("cat /sys/class/zram-control/hot_add").strip()
        self.undo.append(f"echo {dev} > /sys/class/zram-control/hot_remove")
        # zram's logical block size is PAGE_SIZE, so ext2 needs 4 KiB blocks ("EXT2-fs: bad blocksize 1024").
        self.sh(f"echo 16M > /sys/block/zram{dev}/disksize && mke2fs -q -b 4096 /dev/zram{dev} && "
                f"mkdir -p {WRITEBACK_MNT} && mount -t ext2 /dev/zram{dev} {WRITEBACK_MNT}")
        self.undo.append(f"umount {WRITEBACK_MNT}; echo 1 > /sys/block/zram{dev}/reset")

    def _hugepages(self) -> None:
        # hmm-tests' hugetlb cases skip without a free default-size huge page (hugetlb_free_default_pages()):
        # eight 2 MiB pages from the pool, given back after (CONFIG_HUGETLBFS: selftests.config)
        knob = "/proc/sys/vm/nr_hugepages"
        if not self.ssh.run(["test", "-e", knob]).ok:
            raise Unavailable(f"no {knob}: the kernel needs CONFIG_HUGETLBFS (configs/fragments/selftests.config)")
        old = self.sh(f"cat {knob}").strip()
        self.sh(f"echo 8 > {knob}")
        self.undo.append(f"echo {old} > {knob}")

    def _numa(self) -> None:
        if not self.ssh.run(["test", "-d", "/sys/devices/system/node/node1"]).ok:
            raise Unavailable("the guest has one NUMA node: use a two-node machine (configs/machines/numa2.yaml)")


def setup_names() -> list[str]:
    """The needs a case or a selftest run may name: GuestSetup's `_NAME` methods, which provide() dispatches to
    (the one list of them: a profile naming another is refused when it loads)."""
    return sorted(name[1:] for name, value in vars(GuestSetup).items()
                  if name.startswith("_") and not name.startswith("__") and callable(value))
