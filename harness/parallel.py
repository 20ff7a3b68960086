"""What pytest-xdist's controller and its workers share, beyond xdist's own messages: a folder.

    <control>/controller.pid    the controller's pid: a worker whose controller died stops too
    <control>/gwN.pid           each worker's pid: Ctrl-C or SIGTERM on the controller stops them at once
    <control>/gwN.groups.json   node id -> group, from the worker's collection (see GroupScheduling)
    <control>/gwN.used          the worker used the run directory: the controller writes outcomes.json
    <control>/gwN.timings.json  the worker's prepare and boot times, written by its last teardown

Files rather than xdist's end-of-session message (`workeroutput`): an interrupted controller stops
reading its workers' messages, and a worker's timings must still reach timings.json.

GroupScheduling: xdist's controller never collects, it schedules the node ids its workers send, and
a test's machine profile is a marker only workers see. xdist's `--dist loadgroup` would put the group
in the node id ("test_x@name"), which pytest 9 no longer reads, and which results must not show. So each
worker writes its groups into the folder, and the scheduler (xdist's scope scheduling) takes a group as
one unit, handed to one worker whole (which boots that machine once); every other test is a unit of its
own, handed to whichever worker is free. The biggest units go first.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from harness.atomic import write_text
from harness.results.model import Timings

MACHINE_GROUP = "machine-{}"
_PR_SET_PDEATHSIG = 1


def group_of(item: pytest.Item) -> str | None:
    """The group a test runs in: its machine profile's, and any xdist_group marks; None: a unit of its own."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    if machine := item.get_closest_marker("machine"):
        names.add(MACHINE_GROUP.format(machine.args[0]))
    return "_".join(sorted(names)) or None


class Control:
    """The shared folder, seen from the controller (worker "") or from one worker."""

    def __init__(self, folder: Path, worker: str = ""):
        self.folder = folder
        self.worker = worker

    @classmethod
    def make(cls) -> Control:
        control = cls(Path(tempfile.mkdtemp(prefix="harness-xdist-")))
        (control.folder / "controller.pid").write_text(str(os.getpid()))
        return control

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- a worker ----------------------------------------------------------------------------------

    def worker_started(self) -> None:
        write_text(self.folder / f"{self.worker}.pid", str(os.getpid()))
        # The kernel sends SIGTERM when the controller dies (even by SIGKILL); harness/vm/console.py's
        # handler then stops this worker's VMs and unwinds, as a SIGTERM to a run without workers does.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if str(os.getppid()) != (self.folder / "controller.pid").read_text():  # it died before that
            os.kill(os.getpid(), signal.SIGTERM)

    def write_groups(self, items: Iterable[pytest.Item]) -> None:
        groups = {item.nodeid: group for item in items if (group := group_of(item))}
        write_text(self.folder / f"{self.worker}.groups.json", json.dumps(groups, indent=0) + "\n")

    def used_run_dir(self) -> None:
        (self.folder / f"{self.worker}.used").touch()

    def write_timings(self, timings: Timings) -> None:
        timings.write(self.folder / f"{self.worker}.timings.json")

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Ctrl-C or SIGTERM. The controller stops its workers' tests now (xdist would let each finish
        its test). A worker, interrupted once, takes a second signal (the terminal's Ctrl-C reaches it
        and the controller's SIGTERM too) as "stop the VMs" only, so that its teardown still writes its
        timings."""
        if not self.worker:
            self.stop_workers()
            return
        from harness.vm import console

        def stop_vms(signum: int, frame: object) -> None:
            console.kill_all()

        signal.signal(signal.SIGTERM, stop_vms)
        signal.signal(signal.SIGINT, stop_vms)

    # -- the controller ----------------------------------------------------------------------------

    def stop_workers(self) -> None:
        for pid_file in self.folder.glob("gw*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text())
                if _parent_of(pid) == os.getpid():  # still our worker, not a pid reused since it ended
                    os.kill(pid, signal.SIGTERM)

    def run_dir_used(self) -> bool:
        return any(self.folder.glob("*.used"))

    def read_timings(self) -> dict[str, Timings]:
        return {p.name.removesuffix(".timings.json"): Timings.read(p) for p in self.folder.glob("*.timings.json")}

    def read_groups(self) -> dict[str, str]:
        """Every worker's groups, merged (workers collect the same tests: they agree)."""
        groups: dict[str, str] = {}
        for path in sorted(self.folder.glob("*.groups.json")):
            groups |= json.loads(path.read_text())
        return groups

    def scheduler(self, config: pytest.Config, log: object) -> object:
        from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

        control = self

        class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
            groups: dict[str, str] | None = None  # read once every worker's collection is in

            def _split_scope(self, nodeid: str) -> str:
                if self.groups is None:
                    self.groups = control.read_groups()
                return self.groups.get(nodeid, nodeid)

        return GroupScheduling(config, log)


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid
