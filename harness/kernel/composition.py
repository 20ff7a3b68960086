"""compose(): a base config, then fragment and --set requests, then the --on/--off engine (resolver.py), in order.

What it returns says which requests the final .config must show, and which the engine overrode and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import kconfiglib

from harness.kernel.kconfig import Request, apply_base, apply_requests, lookup, value_snapshot
from harness.kernel.resolver import Change, turn_off, turn_on


@dataclass(frozen=True)
class Step:
    """One --on/--off: the changes the engine made, and the other symbols that moved with them."""

    request: Request
    changes: list[Change]
    also_moved: list[str]


@dataclass
class Composition:
    """What compose() did, and the requests the final .config must show."""

    steps: list[Step]
    requests: list[Request]  # fragment/--set requests still in force, then one per --on/--off
    overridden: list[Request]  # fragment/--set requests on symbols that an --on/--off had to move
    skipped: list[Request]  # "not set" requests for symbols this tree does not define

    @property
    def changes(self) -> list[Change]:
        return [change for step in self.steps for change in step.changes]


def compose(kconf: kconfiglib.Kconfig, base: str, requests: Iterable[Request],
            off: Iterable[str] = (), on: Iterable[str] = ()) -> Composition:
    """Base, then fragments and --set (a later line wins), then --on, then --off (so an off always wins).

    A fragment request on a symbol that an --on/--off moved, directly or as a consequence, is
    overridden (and listed); every other request is verified.
    """
    requests = list(requests)
    apply_base(kconf, base)
    skipped = apply_requests(kconf, requests)
    steps = []
    for names, value, action in ((on, "y", turn_on), (off, "n", turn_off)):
        for name in names:
            before = value_snapshot(kconf)
            changes = action(kconf, name)
            after = value_snapshot(kconf)
            listed = {change.symbol for change in changes}
            moved = sorted(sym for sym, v in after.items() if before.get(sym) != v and sym not in listed)
            flag = "--on" if value == "y" else "--off"
            steps.append(Step(Request(lookup(kconf, name).name, value, flag), changes, moved))
    # What an --on/--off moved, directly or through dependencies, overrides the fragments: the axis
    # ("these fragments, notifier off") is the point, and each override is listed with its cause.
    moved_by_engine = {change.symbol for step in steps for change in step.changes}
    moved_by_engine |= {sym for step in steps for sym in step.also_moved}
    latest = {req.symbol: req for req in requests if req not in skipped}
    kept = [req for req in latest.values() if req.symbol not in moved_by_engine]
    overridden = [req for req in latest.values() if req.symbol in moved_by_engine]
    return Composition(steps, kept + [step.request for step in steps], overridden, skipped)
