"""virtio-gpu under test: the driver probes QEMU's virtio-gpu-pci, and its GEM buffers survive the mm.

guest/kprograms/drm_buffers.c creates four buffers (dumb buffers, or virtgpu resources that the host
also reads with TRANSFER_TO_HOST), names them (GEM_FLINK) so that debugfs gem_names lists them, mmaps
and fills them, then mprotects, mremaps and partly munmaps the mappings, unmaps and destroys them.
virtio-gpu subscribes no notifier: what is asserted is the driver's own accounting. A GEM mapping holds
a reference on its object (drivers/gpu/drm/drm_gem.c:drm_gem_vm_open/close), so each buffer's refcount
in gem_names is 2 while mapped, 1 once unmapped, and the name is gone once destroyed; afterwards no
DRM client, name or unsignalled fence is left. The probe (when the kernel has one) must see the mm
events of the same operations, and no splat may appear (the plugin fails the test otherwise).
"""

from __future__ import annotations

import json
import re

import pytest

from harness.checks import drivers
from harness.kernel import userprogs
from harness.observe import debugfs, probe

PROFILE = drivers.load_driver("virtio-gpu")
pytestmark = [pytest.mark.e2e, pytest.mark.machine(PROFILE.machine)]
EFAULT = 14


@pytest.fixture
def dri(guest, kernel) -> str:
    """The virtio_gpu device's /sys/kernel/debug/dri/<minor>; skip if the machine has no such device."""
    drivers.require_config(kernel.build, *PROFILE.config)
    dri = debugfs.find_dri(guest.ssh, "virtio_gpu")
    if dri is None:
        pytest.skip(f"no virtio_gpu DRM device on machine {guest.vm.profile.name!r} "
                    f"(devices: {list(guest.vm.profile.devices)}); configs/machines/virtio-guest.yaml has one")
    return dri


# What drivers/gpu/drm/drm_drv.c:drm_dev_register() prints once the driver is up, per kernel series. virtio_gpu
# is version 0.1.0 with date "0" (drivers/gpu/drm/virtio/virtgpu_drv.h:49-53 in 6.1, :50-54 in 6.12).
INITIALIZED = {
    # 6.1 prints the driver's date too: drivers/gpu/drm/drm_drv.c:913 "Initialized %s %d.%d.%d %s for %s on minor %d"
    "6.1": r"^\[drm\] Initialized virtio_gpu 0\.1\.0 0 for \S+ on minor \d+$",
    # 6.12 no longer does: drivers/gpu/drm/drm_drv.c:957 "Initialized %s %d.%d.%d for %s on minor %d"
    "6.12": r"^\[drm\] Initialized virtio_gpu 0\.1\.0 for \S+ on minor \d+$",
}


def test_driver_probed(guest, dri, kernel):
    """[drm] Initialized virtio_gpu, a card node, and the driver's debugfs entries."""
    initialized = INITIALIZED.get(kernel.tree.series, INITIALIZED["6.12"])
    assert drivers.kernel_said(guest.ssh, initialized), (
        f"no line matching {initialized!r} in the kernel log; what it said about drm/virtio: "
        f"{drivers.kernel_said(guest.ssh, r'drm|virtio')}")
    assert guest.run(["test", "-c", PROFILE.device]).ok
    files = set(guest.run(["ls", dri]).stdout.split())
    assert {"name", "clients", "gem_names", "virtio-gpu-features", "virtio-gpu-irq-fence"} <= files, files
    features = debugfs.parse_fields(debugfs.read(guest.ssh, f"{dri}/virtio-gpu-features"))
    guest.save("virtio-gpu-features.txt", json.dumps(features, indent=1))
    assert features.get("virgl") in ("yes", "no"), features


def _fences(guest, dri: str) -> tuple[int, int]:
    """(last fence the host signalled, last fence the driver emitted) from virtio-gpu-irq-fence."""
    text = debugfs.read(guest.ssh, f"{dri}/virtio-gpu-irq-fence")
    m = re.match(r"fence (\d+) (\d+)", text)
    assert m, f"unexpected virtio-gpu-irq-fence: {text!r}"
    return int(m[1]), int(m[2])


def _ours(table: str, names: set[int]) -> dict[int, tuple[int, int]]:
    """{name: (handles, refcount)} of gem_names rows that are our buffers."""
    return {int(r["name"]): (int(r["handles"]), int(r["refcount"])) for r in debugfs.parse_table(table)
            if int(r["name"]) in names}


@pytest.mark.parametrize("mode", ["dumb", "virtgpu"])
def test_buffers_survive_mm_operations(guest, dri, kernel, mode):
    before = {f: debugfs.read(guest.ssh, f"{dri}/{f}") for f in ("gem_names", "clients")}
    program = drivers.install(guest.ssh, userprogs.kprogram(kernel.build, "drm_buffers"))
    args = [mode, "--debugfs", dri]
    if not kernel.build.has("MMU_NOTIFIER"):
        args.append("--no-probe")  # no probe module without notifiers; the driver is tested all the same
    _, info = guest.program(program.rsplit("/", 1)[1], *args)
    guest.save("drm_buffers.json", json.dumps(info, indent=1))
    if "unsupported" in info:
        pytest.fail(f"virtio_gpu refused {mode} buffers: {info['unsupported']}")

    # the data: every mapping still held what was written, through mprotect, mremap and a partial munmap
    ops = {(o["op"], o["buffer"]): o for o in info["ops"]}
    assert info["pattern_ok"] == 1, "a buffer's mapping lost what the program wrote into it"
    assert all(o["ret"] == 0 for o in info["ops"] if o["op"] != "mremap_grow"), info["ops"]
    # drivers/gpu/drm/drm_gem_shmem_helper.c:drm_gem_shmem_mmap sets VM_DONTEXPAND, which mm/mremap.c refuses
    # to grow
    assert (ops["mremap_grow", 2]["ret"], ops["mremap_grow", 2]["errno"]) == (-1, EFAULT)

    # the driver's accounting, stage by stage. A command in flight (resource creation, transfer) holds its
    # buffers until a worker releases them after the host completed it (virtgpu_vq.c ->
    # virtio_gpu_array_put_free_delayed): the program waits up to 5 s for the counts to settle first.
    assert all(ms >= 0 for ms in info["settle_ms"].values()), f"references never released: {info['settle_ms']}"
    names = {b["name"] for b in info["buffers"]}
    stages = {stage: _ours(text, names) for stage, text in info["gem_names"].items()}
    assert stages["baseline"] == {}
    for stage, refcount in (("mapped", 2), ("after_ops", 2), ("unmapped", 1)):
        assert stages[stage] == dict.fromkeys(names, (1, refcount)), (
            f"gem_names {stage}: expected each buffer with 1 handle and refcount {refcount} "
            f"(1 for the handle{', 1 for its mapping' if refcount == 2 else ''}): {stages[stage]}")
    assert stages["destroyed"] == {}, f"destroyed buffers still named in gem_names: {stages['destroyed']}"

    # and back to the baseline once the program is gone
    after = {f: debugfs.read(guest.ssh, f"{dri}/{f}") for f in ("gem_names", "clients")}
    assert after == before, f"DRM state did not return to its baseline:\nbefore {before}\nafter {after}"
    signalled, emitted = _fences(guest, dri)
    assert signalled == emitted, f"fences emitted but never signalled by the host: {signalled} < {emitted}"

    if info["probed"]:
        events = guest.probe.events(pid=info["pid"])
        guest.save("events.json", probe.dump_events(events))
        starts = [e for e in events if e.kind == "start"]
        # mm/mprotect.c:change_pud_range(); mm/memory.c:unmap_vmas(); mm/mremap.c:move_page_tables()
        for (op, _), o in ops.items():
            want = {"mprotect_read": "PROTECTION_VMA", "munmap": "UNMAP", "munmap_half": "UNMAP",
                    "mremap_move": "UNMAP"}.get(op)
            if want:
                assert any(e.event == want and e.covers(o["start"], o["end"]) for e in starts), (
                    f"{op} of buffer {o['buffer']} over [{o['start']:#x}, {o['end']:#x}): no {want} seen in {starts}")
