"""Page migration between NUMA nodes (move_pages, mbind): the events, and that every page whose frame
changed was invalidated first. These tests need two nodes, so they boot their own guest from
configs/machines/numa2.yaml (NUMA emulation: numa=fake=2) through the plugin's `machine` marker.
"""

from __future__ import annotations

import json

import pytest

from harness.checks import expectations
from harness.checks.cases import Run, run_case
from harness.checks.workloads import GuestSetup, Unavailable
from harness.observe import pagemap
from harness.results.compare import CHECKS_JSON

pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier, pytest.mark.machine("numa2")]

CASES = sorted(n for n, c in expectations.load("").items() if "numa" in c.needs)


def migration_problems(run: Run) -> list[str]:
    info = run.info
    out = []
    if info["nodes_after"] != [info["target_node"]] * len(info["nodes_after"]):
        out.append(f"pages did not all reach node {info['target_node']}: {info['nodes_after']} "
                   f"(before: {info['nodes_before']})")
    start = info["ranges"]["target"][0]
    moves = pagemap.moved_pages(start, info["page_size"], info["pagemap_before"], info["pagemap_after"])
    if len(moves) != len(info["nodes_after"]):
        out.append(f"{len(moves)} of {len(info['nodes_after'])} pages changed frame (pagemap)")
    for m in pagemap.uncovered_moves(moves, run.events, info["page_size"], info["seq_before"], info["seq_after"]):
        out.append(f"page {m.addr:#x} moved from pfn {m.old_pfn:#x} to {m.new_pfn:#x} with no invalidation "
                   f"covering it among records {info['seq_before']}..{info['seq_after']}")
    return out


@pytest.mark.parametrize("name", CASES)
def test_migration_invalidates_every_page_it_moves(guest, kernel, name):
    case = expectations.load(kernel.tree.series)[name]
    setup = GuestSetup(guest.ssh)
    try:
        setup.provide("numa")
    except Unavailable as e:
        pytest.fail(f"the numa2 machine should have two nodes: {e}")
    run = run_case(guest, case)
    extra = migration_problems(run)
    guest.save(CHECKS_JSON, json.dumps({**run.checks([]), "completeness": extra}, indent=1))
    assert not run.problems() and not extra, run.report(extra)
