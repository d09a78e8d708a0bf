"""The Busbar and sessions figures' arithmetic: streams at once, workers needed, RSS slope."""

from __future__ import annotations

import math

import pytest

from tests.benchmarks.busbar import peak_streaming, workers_needed
from tests.benchmarks.measures import marginal_rss
from tests.benchmarks.probes import Sample
from tests.benchmarks.streams import StreamOutcome


def test_peak_streaming_counts_streams_delivering_at_the_same_time() -> None:
    def stream(first: float, last: float) -> StreamOutcome:
        return StreamOutcome(sent=first - 0.5, contents=[(first, " 1.0"), (last, " 2.0")])

    outcomes = [
        stream(100.0, 102.0),
        stream(101.0, 103.0),
        stream(101.5, 101.8),
        stream(102.0, 104.0),  # starts as the first ends: not counted together
        StreamOutcome(sent=100.0, ended=105.0),  # open but never streamed (queued, then failed)
    ]

    assert peak_streaming(outcomes) == 3
    assert peak_streaming([]) == 0


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
