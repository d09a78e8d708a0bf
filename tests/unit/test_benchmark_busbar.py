"""The Busbar and sessions figures' arithmetic: streams open at once, workers needed, RSS slope."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.busbar import peak_open, workers_needed
from tests.benchmarks.measures import marginal_rss
from tests.benchmarks.probes import Sample
from tests.benchmarks.streams import StreamOutcome


def test_peak_open_counts_overlapping_streams_only() -> None:
    outcomes = [
        StreamOutcome(sent=100.0, ended=102.0),
        StreamOutcome(sent=101.0, ended=103.0),
        StreamOutcome(sent=101.5, ended=101.8),
        StreamOutcome(sent=102.0, ended=104.0),  # starts as the first ends: not counted together
        StreamOutcome(ended=101.6),  # never sent (connection refused): not open
    ]

    assert peak_open(outcomes) == 3
    assert peak_open([]) == 0


def test_workers_needed_covers_every_stream() -> None:
    assert workers_needed(500, 240) == 3
    assert workers_needed(480, 240) == 2
    assert workers_needed(10, 240) == 1
    assert workers_needed(0, 240) == 1


def test_marginal_rss_is_the_slope_while_the_load_ramps_up() -> None:
    def sample(at: float, running: int, rss_kb: int) -> Sample:
        return Sample(at=at, running=running, connections={}, worker_rss_kb=rss_kb)

    fixed = 10 * 1024  # grown once, whatever the count (the thread pool)
    ramp = enumerate((10, 50, 100, 200))
    samples = [sample(at, running, 100_000 + fixed + running * 50) for at, running in ramp]
    samples.append(sample(9, 150, 500_000))  # after the peak: left out

    assert marginal_rss(samples, until=3) == pytest.approx(50 / 1024)
    assert math.isnan(marginal_rss(samples[:1], until=3))
