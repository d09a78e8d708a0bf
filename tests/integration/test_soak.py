"""The soak benchmark's code path, CI-sized: a few seconds of mixed surfaces, RSS sampled."""

from __future__ import annotations

import math

from tests.benchmarks.harness import running_stack
from tests.benchmarks.soak import Soak, soak


def test_slope_is_mib_per_minute_after_the_first_sample() -> None:
    start_up = (0.0, 50 * 1024, 10 * 1024)  # left out: start-up allocations
    steady = [(m, int((60 + 2 * m) * 1024), int((20 + 0.5 * m) * 1024)) for m in (1.0, 2.0, 3.0, 4.0)]
    result = Soak(samples=[start_up, *steady])
    assert math.isclose(result.slope(1), 2.0) and math.isclose(result.slope(2), 0.5)
    assert math.isnan(Soak(samples=[start_up, steady[0]]).slope(1))  # one point has no slope


def test_short_soak_runs_every_surface_and_samples_both_processes() -> None:
    lines: list[str] = []
    with running_stack("copilot") as stack:
        result = soak(stack, minutes=0.1, rate=2.0, sample_every=2.0, announce=lines.append)
    assert result.failures == 0 and result.turns >= 6
    assert len(result.samples) >= 3 and len(lines) == len(result.samples)
    assert all(web > 0 and worker > 0 for _, web, worker in result.samples)
    assert not math.isnan(result.slope(1)) and not math.isnan(result.slope(2))
    assert [m.key for m in result.metrics()] == [
        "soak_turns",
        "soak_failures",
        "soak_web_slope",
        "soak_worker_slope",
    ]
