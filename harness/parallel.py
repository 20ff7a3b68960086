"""Which tests share a pytest-xdist worker: those of one machine profile, so that one worker boots it.

xdist's controller never collects: it schedules node ids its workers send. A test's machine profile is
a marker (`@pytest.mark.machine("numa2")`), seen only by the workers, so each worker writes the groups
it collected (node id -> group) into a folder the controller named, before it sends its collection.
GroupScheduling is xdist's scope scheduling with those groups as scopes: a group is one unit, handed
to one worker whole, and every other test is a unit of its own, handed to whichever worker is free.
The biggest units go first.

xdist's own `--dist loadgroup` names the group in the node id ("test_x@name"), which pytest 9 no longer
reads; and results must name a test as a run without workers does. So the groups travel apart from
the ids, and `xdist_group` marks are honoured too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

from harness.atomic import write_text

MACHINE_GROUP = "machine-{}"


def group_of(item: pytest.Item) -> str | None:
    """The group a test runs in: its machine profile's, and any xdist_group marks; None: a unit of its own."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    if machine := item.get_closest_marker("machine"):
        names.add(MACHINE_GROUP.format(machine.args[0]))
    return "_".join(sorted(names)) or None


def write_groups(folder: Path, worker: str, items: Iterable[pytest.Item]) -> None:
    groups = {item.nodeid: group for item in items if (group := group_of(item))}
    write_text(folder / f"{worker}.json", json.dumps(groups, indent=0) + "\n")


def read_groups(folder: Path) -> dict[str, str]:
    """Every worker's groups, merged (workers collect the same tests: they agree)."""
    groups: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        groups |= json.loads(path.read_text())
    return groups


class GroupScheduling(LoadScopeScheduling):
    def __init__(self, config: pytest.Config, log: object, folder: Path):
        super().__init__(config, log)  # type: ignore[arg-type]
        self.folder = folder
        self.groups: dict[str, str] | None = None  # read once every worker's collection is in

    def _split_scope(self, nodeid: str) -> str:
        if self.groups is None:
            self.groups = read_groups(self.folder)
        return self.groups.get(nodeid, nodeid)
