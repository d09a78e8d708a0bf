"""The Overload benchmark's arithmetic: max-min fair shares and the key mix (no stack needed)."""

from __future__ import annotations

import collections

import pytest

from tests.benchmarks.overload import KEYS, Client, fair_shares, fairness, key_of
from tests.benchmarks.streams import StreamOutcome


def test_fair_shares_fill_small_demands_first() -> None:
    assert fair_shares(80, {"a": 140, "b": 20, "c": 20, "d": 20}) == {"a": 20, "b": 20, "c": 20, "d": 20}
    assert fair_shares(100, {"a": 140, "b": 10, "c": 20, "d": 20}) == {"a": 50, "b": 10, "c": 20, "d": 20}
    assert fair_shares(10, {"a": 0, "b": 5}) == {"a": 0, "b": 5}
    assert sum(fair_shares(7, {"a": 9, "b": 9, "c": 9}).values()) == pytest.approx(7)


def test_one_key_sends_seventy_percent_interleaved() -> None:
    mix = collections.Counter(key_of(index) for index in range(200))

    assert mix == {KEYS[0]: 140, KEYS[1]: 20, KEYS[2]: 20, KEYS[3]: 20}
    assert {key_of(index) for index in range(10)} == set(KEYS)


def test_fairness_counts_turns_completed_inside_the_window() -> None:
    def client(key: str, ended: float, finished: bool = True) -> Client:
        outcome = StreamOutcome(status=200, done=finished, ended=ended)
        return Client(key, 0.0, attempts=[outcome])

    users = [
        client(KEYS[0], 5),
        client(KEYS[0], 6),
        client(KEYS[1], 7),
        client(KEYS[1], 50),
        client(KEYS[2], 8),
    ]
    users.append(client(KEYS[3], 9, finished=False))

    shares = fairness(users, (0.0, 10.0))

    assert {key: done for key, (done, _) in shares.items()} == {
        KEYS[0]: 2,
        KEYS[1]: 1,
        KEYS[2]: 1,
        KEYS[3]: 0,
    }
    # 4 turns over demands 2, 2, 1, 1: one each.
    assert [share for _, share in shares.values()] == pytest.approx([1.0, 1.0, 1.0, 1.0])
