"""One run of an event case in a guest (configs/expectations/events.yaml): its program run with the probe
watching, the records of its pid, and the verdict against the case's expectations and the notifier contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks import expectations as expect
from harness.observe import probe as observe

if TYPE_CHECKING:
    from harness.guest import Guest


@dataclass
class Run:
    """One run of a case: what the program printed, the probe's records of its pid, and the verdict."""

    case: expect.Case
    info: dict
    events: list[observe.Event]
    outcome: expect.Outcome
    counters: dict[str, int]

    def problems(self) -> list[str]:
        """Everything wrong with this run: the case's expectations and the notifier contract."""
        return list(self.outcome.failures) + self.contract_problems()

    def checks(self, extra: list[str]) -> dict[str, list[str]]:
        """The problems by kind, as checks.json keeps them: `harness compare` tells a test that fails only
        on its event expectations (the series changed the events) from one that broke the contract."""
        return {"expectations": list(self.outcome.failures), "contract": self.contract_problems(), "extra": extra}

    def contract_problems(self) -> list[str]:
        out = []
        if self.info.get("probed") != 1:
            out.append("the program ran without the probe watching it")
        classic = [e for e in self.events if e.sub == "mn"]
        releases = [e for e in classic if e.kind == "release"]
        # mm/mmap.c:exit_mmap -> mmu_notifier_release: exactly one release, and mn_hlist_release unhooks
        # the subscriber before exit's unmap_vmas, so no classic record may follow it.
        if len(releases) != 1:
            out.append(f"expected one release() at exit, saw {len(releases)}")
        elif classic[-1] is not releases[0]:
            out.append(f"classic records after release(): {classic[classic.index(releases[0]) + 1:]}")
        if unpaired := observe.unpaired_starts(self.events):
            out.append(f"invalidate_range_start without its end: {unpaired}")
        if orphans := observe.orphan_ends(self.events):
            out.append(f"invalidate_range_end without its start: {orphans}")
        if self.counters.get("dropped"):
            out.append(f"the probe's ring dropped {self.counters['dropped']} records: events are missing")
        return out

    def report(self, extra: list[str] | None = None) -> str:
        """The problems (and any the caller found), under a line naming the case and the source it reflects."""
        head = f"case {self.case.name} ({' '.join(self.case.argv)}; expectations from {self.case.basis} source)"
        return "\n".join([head, *(f"  - {p}" for p in [*self.problems(), *(extra or [])])])


def run_case(guest: Guest, case: expect.Case, *extra_args: str, save_as: str = "") -> Run:
    """Run the case's program with the probe cleared first; save its summary and events in the test's dir."""
    guest.probe.clear()
    program, *args = case.argv
    _, info = guest.program(program, *args, *extra_args, timeout=120)
    events = guest.probe.events(pid=info["pid"])
    counters = guest.probe.counters()
    suffix = f"-{save_as}" if save_as else ""
    guest.save(f"events{suffix}.json", observe.dump_events(events))
    guest.save(f"program{suffix}.json", json.dumps(info, indent=1))
    return Run(case, info, events, expect.check(case, events, info), counters)
