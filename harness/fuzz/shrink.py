"""Shrinking a failing program to a small one that fails the same check: delta debugging over its
operations (Zeller's ddmin: drop chunks, halving their size), then each remaining operation made smaller
(harness/fuzz/program.py:simpler), repeated until nothing more can go.

Own code rather than Hypothesis's: every test of a candidate is a run in the guest (0.1-3 s, see
docs/fuzz.md), so what counts is how few runs a shrink needs, and ddmin's chunks remove most of a
program in a handful of them; the candidates are plain lists that the executor runs as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.fuzz.program import Program, simpler


@dataclass
class Shrunk:
    program: Program
    runs: int  # candidates tried
    complete: bool  # False: the budget ran out first (the program is smaller, maybe not minimal)


def shrink(program: Program, fails: Callable[[Program], bool], budget: int = 200) -> Shrunk:
    """The smallest program found that still `fails`; `fails(program)` must be true to start with."""
    runs = 0
    best = program

    def test(candidate: Program) -> bool:
        nonlocal runs
        if runs >= budget or not candidate:
            return False
        runs += 1
        return fails(candidate)

    changed = True
    while changed and runs < budget:
        changed = False
        # ddmin: remove chunks of n parts, n doubling up to one operation a chunk
        n = 2
        while len(best) >= 2 and runs < budget:
            size = max(1, len(best) // n)
            removed = False
            for start in range(0, len(best), size):
                candidate = best[:start] + best[start + size:]
                if test(candidate):
                    best, removed, changed = candidate, True, True
                    n = max(n - 1, 2)
                    break
            if not removed:
                if size == 1:
                    break
                n = min(n * 2, len(best))
        # then each operation, smaller
        for i in range(len(best)):
            for smaller in simpler(best[i]):
                if runs >= budget:
                    break
                candidate = (*best[:i], smaller, *best[i + 1:])
                if test(candidate):
                    best, changed = candidate, True
                    break
    return Shrunk(best, runs, runs < budget)
