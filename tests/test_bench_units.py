"""harness/vm/bench.py's arithmetic (the figures themselves come from real boots: `harness bench`)."""

from __future__ import annotations

from harness.vm.bench import spread


def test_spread_gives_median_and_nearest_rank_p95():
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unordered
    assert spread(values) == {"median": 50.5, "p95": 95.0, "min": 1.0, "max": 100.0, "n": 100}


def test_p95_of_twenty_is_the_nineteenth_and_of_a_few_the_largest():
    assert spread([float(v) for v in range(1, 21)])["p95"] == 19.0
    assert spread([3.0, 1.0, 2.0])["p95"] == 3.0
    assert spread([0.5])["p95"] == 0.5
