"""Soft-RoCE (rdma_rxe) on eth0: real verbs over a loopback RC connection, and ODP memory regions that must
follow the process's mm.

guest/rdma/rxe_odp.c registers memory and RDMA-READs/WRITEs it from a second QP of the same process, so the
memory region's pages are the ones the process's own munmap, mprotect, MADV_DONTNEED, move_pages and
compaction change. Each read is compared byte for byte with what the CPU sees at that moment: a stale byte
is a failure. kprobes on the driver's own functions (harness/checks/rdma.py) count, between the program's
trace markers, the invalidations rxe received (rxe_odp.c:rxe_ib_invalidate_range, with the range's event)
and the device page faults it took (umem_odp.c:ib_umem_odp_map_dma_and_lock with `fault`).

rxe has ODP since Linux 6.15: on 6.1 and 6.12 the ODP cases skip, saying so, and the pinned ones still run.
"""

from __future__ import annotations

import json
import time

import pytest

from harness.checks import drivers, evidence, rdma
from harness.checks.workloads import GuestSetup, Unavailable
from harness.observe import kprobe
from harness.results import compare

PROFILE = drivers.load_driver("rxe")
# fresh_guest: rdma_rxe loaded and a link added, for every test here (they share them) and no other
pytestmark = [pytest.mark.e2e, pytest.mark.machine(PROFILE.machine), pytest.mark.fresh_guest(scope="module"),
              pytest.mark.arches(*PROFILE.arches, why="configs/drivers/rxe.yaml: not run there yet")]
REM_ACCESS_ERR = "remote access error"  # ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR)


@pytest.fixture
def rxe(guest, kernel):
    """The guest with rxe0 up over eth0 (the kernel's RDMA_RXE and uverbs required)."""
    drivers.require_config(kernel.build, *PROFILE.config)
    try:
        guest.save("rdma-link.txt", rdma.link_up(guest.ssh, kernel.build) + "\n")
    except rdma.RxeError as e:
        pytest.fail(str(e))
    return guest


@pytest.fixture
def caps(rxe):
    _, info = rxe.program("rxe_odp", "caps")
    rxe.save("caps.json", json.dumps(info, indent=1))
    return info


@pytest.fixture
def odp(rxe, kernel, caps):
    """The guest, on a kernel whose rxe0 does on-demand paging; a skip naming why not otherwise."""
    try:
        reason = rdma.odp_unavailable(kernel.build, kernel.tree, caps)
    except rdma.RxeError as e:
        pytest.fail(str(e))
    if reason:
        pytest.skip(reason)
    return rxe


def counted(g, kernel, first: str, last: str, program: str, *args: str, timeout: float = 180) -> tuple[dict,
                                                                                                        rdma.OdpCounts]:
    """Run a guest program under the ODP kprobes; its summary and what rxe did between two of its markers."""
    with kprobe.CallProbes(g.ssh, rdma.odp_probes(kernel.build)) as probes:
        _, info = g.program(program, *args, timeout=timeout)
        calls = probes.calls()
    g.save("calls.txt", "\n".join(map(str, calls)) + "\n")
    counts = rdma.OdpCounts.from_calls(kprobe.between(calls, first, last), kprobe.event_names(kernel.build))
    g.save(f"{program}.json", json.dumps(info | {"odp_counts": counts.as_dict()}, indent=1))
    return info, counts


def odp_copy_bug(kernel) -> str | None:
    """The profile's known ODP copy bug, when the tree under test has its code (configs/drivers/rxe.yaml)."""
    return PROFILE.known_failure("odp-copy", kernel.tree.series, tree=kernel.tree.path)


def assert_current(r: dict, bug: str | None, what: str) -> None:
    """A device read returned what the CPU sees now. Where the tree has the ODP copy bug, only each page's
    first packet comes back right (which still tells the current page from a stale one: every byte of a stale
    page is old), and every other wrong byte must be exactly the bug's copy of it, nothing else."""
    assert r["status"] == "success", f"{what}: {r}"
    if bug:
        assert r["head_mismatch"] == 0 and r["mismatch"] == r["as_page_start"], (
            f"{what}: {r['head_mismatch']} bytes of the pages' first packets unlike the CPU's, "
            f"{r['mismatch'] - r['as_page_start']} more wrong bytes than the known ODP copy bug explains: {r}")
    else:
        assert r["mismatch"] == 0, f"{what}: {r['mismatch']} bytes unlike the CPU's ({r.get('stale', '?')} of them " \
                                   f"the old bytes: a stale page): {r}"


def test_rxe_link_is_up(rxe, caps):
    """rxe0 sits on eth0, its port is active, and the GID the loopback uses is eth0's IPv4 address (RoCE v2)."""
    link = rxe.run(["rdma", "link", "show", f"{rdma.DEVICE}/1"], check=True).stdout
    assert f"netdev {rdma.NETDEV}" in link, link
    devinfo = rxe.run(["ibv_devinfo", "-d", rdma.DEVICE], check=True).stdout
    rxe.save("ibv_devinfo.txt", devinfo)
    assert "PORT_ACTIVE" in devinfo, devinfo
    address = rdma.ipv4_of(rxe.ssh)
    assert address, f"{rdma.NETDEV} has no IPv4 address (images/init sets 10.0.2.15)"
    assert caps["gid"] == rdma.gid_of_ipv4(address), (
        f"the loopback picked GID {caps['gid']} (index {caps['gid_index']}), not {rdma.NETDEV}'s {address}")


def test_odp_capability(odp, caps):
    """rxe0 offers ODP for RC READ and WRITE (rxe.c:rxe_init_device_param, with INFINIBAND_ON_DEMAND_PAGING)."""
    assert caps["odp_rc_read"] and caps["odp_rc_write"], caps


@pytest.mark.parametrize("mr", ["pinned", "odp"])
def test_loopback_read_write(rxe, kernel, caps, request, mr):
    """A read-only and a read-write MR: RDMA READ of each returns the CPU's bytes, an RDMA WRITE to the
    read-write one lands where the CPU sees it, and one to the read-only MR is refused, its bytes untouched."""
    if mr == "odp":
        request.getfixturevalue("odp")
    if caps["odp"]:  # rxe's ODP functions exist to be probed
        info, counts = counted(rxe, kernel, "rxe_odp: ops", "rxe_odp: done", "rxe_odp", "access", f"--mr={mr}")
    else:
        _, info = rxe.program("rxe_odp", "access", f"--mr={mr}")
        counts = None
    assert (info["reg_ro"], info["reg_rw"]) == ("ok", "ok"), f"registration failed: {info}"
    ops = info["ops"]
    # rxe_resp.c:check_rkey: no IB_ACCESS_REMOTE_WRITE on the MR -> RESPST_ERR_RKEY_VIOLATION -> NAK
    assert (ops["write_ro"]["status"], ops["write_ro"]["mismatch"]) == (REM_ACCESS_ERR, 0), ops["write_ro"]
    if mr == "pinned" and counts:  # pinned MRs have no notifier and never fault
        assert (counts.invalidations, counts.faults, counts.snapshots) == (0, 0, 0), counts
    bug = odp_copy_bug(kernel) if mr == "odp" else None
    for op in ("read_ro", "read_rw"):
        assert_current(ops[op], bug, op)
    assert ops["write_rw"]["status"] == "success", ops["write_rw"]
    wrong = {op: ops[op]["mismatch"] for op in ("read_ro", "read_rw", "write_rw") if ops[op]["mismatch"]}
    if bug and wrong:
        pytest.xfail(f"known kernel bug, {wrong} bytes wrong in {info['pages']} pages: {bug}")
    assert not wrong, f"bytes unlike what was read or written: {wrong}; {ops}"


# op: the event the mm sends over the MR's pages (7.3 call site), how many it sends at least, and how many pages
# the reads after it must fault back, from the program's report (rxe faults per packet, and a packet of the path
# MTU, 1024 bytes, never spans two pages: a page dropped by an invalidation costs at least one fault to read).
FOLLOW = {
    # munmap, then mmap at the same address: every page is new
    "munmap": ("UNMAP", "mm/memory.c:unmap_vmas (munmap -> do_vmi_munmap)", lambda i: 1, lambda i: i["pages"]),
    # mprotect read-only, read, mprotect read-write: two invalidations, each followed by a read of every page
    "mprotect": ("PROTECTION_VMA", "mm/mprotect.c:change_pud_range", lambda i: 2, lambda i: 2 * i["pages"]),
    # MADV_DONTNEED of the first half
    "dontneed": ("CLEAR", "mm/memory.c:zap_vma_range_batched (madvise_dontneed_single_vma)", lambda i: 1,
                 lambda i: i["pages"] // 2),
    # one CLEAR per page migrated, each page then read
    "migrate": ("CLEAR", "mm/rmap.c:try_to_migrate_one", lambda i: i["moved"], lambda i: i["moved"]),
    "compact": ("CLEAR", "mm/rmap.c:try_to_migrate_one", lambda i: i["frames_changed"],
                lambda i: i["frames_changed"]),
}


@pytest.mark.parametrize("op", FOLLOW)
def test_mr_follows_the_process(odp, kernel, op):
    """After the operation, every RDMA READ of the ODP MR returns what the CPU sees now, never the old bytes:
    rxe received the operation's invalidations and faulted every dropped page back."""
    setup = GuestSetup(odp.ssh)
    if op == "migrate":
        try:
            setup.provide("numa")
        except Unavailable as e:
            pytest.skip(str(e))
    info, counts = counted(odp, kernel, "rxe_odp: op", "rxe_odp: done", "rxe_odp", "follow", op, timeout=300)
    event, call_site, sent, refaulted = FOLLOW[op]
    if op == "compact" and info["frames_changed"] == 0:
        pytest.skip(f"compaction moved none of the MR's {info['pages'] // 16} kept pages this time: nothing to follow")
    if op == "migrate":
        assert info["moved"] == info["pages"], (
            f"move_pages put {info['moved']} of {info['pages']} pages on node {info['target_node']}")
        assert info["frames_changed"] == info["pages"], info
    bug = odp_copy_bug(kernel)
    for r in info["reads"]:
        assert_current(r, bug, f"RDMA READ {r['when']} (rxe: {counts})")
    assert len(info["reads"]) >= 2, info["reads"]
    assert counts.events[event] >= sent(info), (
        f"{call_site} sends {event} over the MR's pages ({sent(info)} at least); rxe received {counts}")
    assert counts.faults >= refaulted(info), (
        f"the reads after {op} must fault {refaulted(info)} dropped pages back; rxe: {counts}")


def test_unmapped_access_fails_cleanly(odp, kernel):
    """An RDMA READ of the part of an ODP MR whose memory was unmapped completes with an error (no hang, no
    splat), and the MR's mapped part still reads right afterwards."""
    info, counts = counted(odp, kernel, "rxe_odp: op", "rxe_odp: done", "rxe_odp", "follow", "unmapped")
    reads = {r["when"]: r for r in info["reads"]}
    for when in ("mapped_half", "mapped_half_again"):
        assert_current(reads[when], odp_copy_bug(kernel), when)
    # umem_odp.c: hmm_range_fault finds no VMA -> -EFAULT -> rxe_resp.c:read_reply `if (err)` ->
    # RESPST_ERR_RKEY_VIOLATION -> a NAK the requester completes with IBV_WC_REM_ACCESS_ERR
    assert reads["unmapped_half"]["status"] == REM_ACCESS_ERR, reads["unmapped_half"]
    assert counts.fault_errors >= 1, f"the device fault of the unmapped half must fail; rxe: {counts}"
    assert counts.events["UNMAP"] >= 1, counts


# The evidence workloads (harness/checks/evidence.py, the same cases as the model mirror and test_hmm) on an
# ODP MR: the event each operation sends over the mirrored pages (7.3 call sites), and the setup it needs.
EVIDENCE = {w.name: w for w in evidence.WORKLOADS}
EVENTS = {"writeback": "PROTECTION_PAGE", "softdirty": "SOFT_DIRTY", "mprotect": "PROTECTION_VMA",
          "fork": "PROTECTION_PAGE", "fork-cow": "PROTECTION_PAGE", "dontneed": "CLEAR", "munmap": "UNMAP",
          "compaction": "CLEAR"}
# Write-protects only (mm/rmap.c:page_vma_mkclean_one, fs/proc/task_mmu.c:clear_refs, mm/memory.c:
# copy_page_range): an event-aware rxe (configs/patches/rxe-odp-honour-event.patch) keeps a read-only MR's
# pages across them. fork-cow's parent then writes while the child lives: each page is copied and announced
# with CLEAR (mm/memory.c:wp_page_copy), so it refaults either way.
SKIPPABLE = {"writeback", "softdirty", "fork"}


@pytest.mark.test_timeout(600)
@pytest.mark.parametrize("name", list(EVIDENCE))
def test_evidence_reader(odp, kernel, name):
    """ev_rxe, the evidence workloads on an ODP MR: each iteration's operation (which writes a new byte to every
    page), then one RDMA access of the mirrored pages (ro: a READ compared byte for byte with the CPU's; rw: a
    WRITE the CPU must see). No access may fail and no byte may come back stale, whichever events rxe skips:
    that is the safety argument for an event-aware driver. The counters (invalidations received, acted on,
    device faults) and every access's time go to device.json for harness compare and harness evidence.
    writeback-ro is the log-export scenario: a file on ext2 written and msync'd, its pages in a read-only MR."""
    w = EVIDENCE[name]
    pages, iters = (w.pages, w.iters) if w.case == "compaction" else (64, 10)
    setup = GuestSetup(odp.ssh)
    try:
        for need in w.needs:
            setup.provide(need)
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        info, counts = counted(odp, kernel, "ev_rxe: loop", "ev_rxe: done", "ev_rxe", w.case, w.perm,
                               f"--pages={pages}", f"--iters={iters}", timeout=600)
    finally:
        setup.restore()
    stale = {k: info[k] for k in ("stale_bytes", "head_stale_bytes", "as_page_start_bytes", "stale_iters")}
    compare.write_device_counters(odp.dir, "rxe", name, {
        "invalidations": counts.invalidations, "acted": counts.acted, "device_faults": counts.faults,
        "stale": info["stale_bytes"]}, [ms / 1e3 for ms in info["access_ms"]])
    assert info["errors"] == 0, info
    assert len(info["access_ms"]) == iters and all(ms > 0 for ms in info["access_ms"]), info["access_ms"]
    bug = odp_copy_bug(kernel)
    if bug and w.perm == "rw" and info["stale_bytes"]:  # a write that lost its offset cannot be told from stale
        pytest.xfail(f"known kernel bug ({stale}): {bug}")
    if bug:
        assert stale["head_stale_bytes"] == 0 and stale["stale_bytes"] == stale["as_page_start_bytes"], stale
    else:
        assert stale["stale_bytes"] == 0, stale
    event = EVENTS[w.case]
    if w.case == "compaction":  # the kernel picks what moves: every invalidation acted on, a fault per page moved
        assert counts.acted == counts.invalidations, counts
        return
    assert counts.events[event] >= iters, f"{w.why}: {event} every iteration; rxe received {counts}"
    if rdma.event_aware(kernel.tree) and w.perm == "ro" and w.case in SKIPPABLE:
        assert counts.acted == 0 and counts.faults == 0, f"an event-aware rxe keeps a read-only MR across {event}: " \
                                                        f"{counts}"
    else:
        assert counts.acted >= iters and counts.faults >= iters, (
            f"every iteration's access must refault what {event} invalidated: {counts}")


@pytest.mark.test_timeout(300)
@pytest.mark.parametrize("mr", ["pinned", "odp"])
@pytest.mark.parametrize("tool", ["ib_read_bw", "ib_write_bw"])
def test_perftest(rxe, caps, request, tool, mr):
    """perftest (a tool we did not write), server and client on the guest over rxe0, with pinned or --odp
    memory: it completes and reports a bandwidth."""
    if mr == "odp":
        request.getfixturevalue("odp")
    size = "65536"
    common = [tool, "-d", rdma.DEVICE, "-x", str(caps["gid_index"]), "-n", "200", "-s", size, "-F",
              *(["--odp"] if mr == "odp" else [])]
    rxe.run(["sh", "-c", f"{rdma.shell_line(common)} >/tmp/perftest.server 2>&1 &"], check=True)
    try:
        client = None
        for _ in range(20):  # the server needs a moment to listen on its TCP port (18515)
            time.sleep(1)
            client = rxe.run([*common, "127.0.0.1"], timeout=240)
            if client.ok or "Couldn't connect" not in client.stdout + client.stderr:
                break
        assert client is not None
        server = rxe.run(["cat", "/tmp/perftest.server"]).stdout
        rxe.save(f"{tool}.txt", f"--- client\n{client.stdout}{client.stderr}\n--- server\n{server}")
        assert client.ok, f"{tool} client failed:\n{client.describe()}\nserver:\n{server}"
        # " #bytes  #iterations  BW peak[MB/sec]  BW average[MB/sec]  MsgRate[Mpps]"
        rows = [line.split() for line in client.stdout.splitlines() if line.split()[:2] == [size, "200"]]
        assert rows and float(rows[0][3]) > 0, f"no bandwidth line for {size}-byte messages:\n{client.stdout}"
    finally:
        rxe.run(["sh", "-c", f"kill $(pidof {tool}) 2>/dev/null; true"])
