"""The Busbar streams figure's arithmetic: streams open at once, workers needed (no stack needed)."""

from __future__ import annotations

from tests.benchmarks.busbar import peak_open, workers_needed
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
