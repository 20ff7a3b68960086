"""A crashed or hung guest's memory, kept where drgn opens it: QMP's `dump-guest-memory` into the VM's directory.

Only a kernel that can be read afterwards is dumped (`dumpable`): one with DWARF (vmlinux and modules) and
with VMCOREINFO handed to QEMU (`CONFIG_FW_CFG_SYSFS` and `CONFIG_VMCORE_INFO`: configs/fragments/debug/dump.config),
booted with `-device vmcoreinfo` so that QEMU writes the kernel's note into the dump. Such a guest boots
with `panic=0`: after a panic it spins instead of rebooting, and the console's reader (harness/vm/machine.py)
dumps it once the panic has printed; a hung guest is dumped by the watchdog's post-mortem, before QEMU is
stopped. The dump is kdump-compressed (zlib): pages compress, and drgn reads it through libkdumpfile.

Beside it: `vmlinux` (a hard link to the build's, or a copy across file systems: the build may be rebuilt
later, the dump stays readable), the guest modules' `.ko` files the analysis loads (`modules/`), and
`vmcore.json` (why, when, how long the dump took and its size). harness/observe/vmcore.py reads them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from harness.vm import qmp

FORMAT = "kdump-zlib"
# y in the kernel's .config: FW_CFG_SYSFS built in (a module would hand the note over only once loaded)
NEEDS = ("DEBUG_INFO", "FW_CFG_SYSFS", "VMCORE_INFO")
DUMP_TIMEOUT_S = 300.0  # a 1 GiB guest dumps in seconds; a loaded host, a bigger profile: minutes at most
VMCORE, INFO = "vmcore", "vmcore.json"


def dumpable(config: dict[str, str]) -> bool:
    """The kernel hands QEMU its VMCOREINFO and carries DWARF: a dump of it can be read."""
    return all(config.get(symbol) == "y" for symbol in NEEDS)  # read_config_values: names without CONFIG_


def capture(channel: qmp.Channel, into: Path, kernel_build: Path, modules: list[Path], reason: str) -> dict[str, str]:
    """Dump the guest's memory into `into`/vmcore with what reads it; {"vmcore": path} or {"vmcore": "not ..."}."""
    into.mkdir(parents=True, exist_ok=True)
    dest = into / VMCORE
    started = time.monotonic()
    try:
        qmp.dump(channel, dest, FORMAT, DUMP_TIMEOUT_S)
    except (qmp.QMPError, OSError) as e:
        dest.unlink(missing_ok=True)
        return {"vmcore": f"not captured: {e}"}
    dump_s = time.monotonic() - started
    _keep(kernel_build / "vmlinux", into / "vmlinux")
    for ko in modules:
        _keep(ko, into / "modules" / ko.name)
    info = {"reason": reason, "format": FORMAT, "bytes": dest.stat().st_size, "dump_s": round(dump_s, 2),
            "vmlinux": str(into / "vmlinux"), "modules": sorted(ko.name for ko in modules),
            "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (into / INFO).write_text(json.dumps(info, indent=1) + "\n")
    return {"vmcore": str(dest)}


def _keep(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system: a copy
        shutil.copy2(src, dest)
