"""The door's expected-wait estimate against a real redis-server (the clock is the test's)."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from service.accounts import admission
from service.accounts.fair_line import new_ticket
from service.accounts.registry import Registry
from service.accounts.scheduler import Scheduler
from service.errors import RateLimited

NOW = 1_000_000.0


def pool(redis: Redis, accounts: int, rpm: int) -> tuple[Registry, Scheduler]:
    registry = Registry(redis, namespace="adm", secret_key="k" * 32, clock=lambda: NOW)
    registry.seed([f"_U=a{n}" for n in range(accounts)])
    scheduler = Scheduler(
        registry, max_concurrent=100, rpm=rpm, lease_seconds=10, clock=lambda: NOW, sleep=lambda s: None
    )
    return registry, scheduler


def test_an_idle_pool_admits_at_once(redis_client: Redis) -> None:
    registry, _ = pool(redis_client, 2, 12)
    assert admission.expected_wait(registry, max_concurrent=2, rpm=12, now=NOW) == 0


def test_the_wait_follows_the_line_and_the_pools_rate(redis_client: Redis) -> None:
    registry, scheduler = pool(redis_client, 2, 3)
    for _ in range(6):  # both accounts used their minute at NOW
        assert scheduler.acquire("x") is not None
    assert admission.expected_wait(registry, max_concurrent=2, rpm=3, now=NOW + 5) == 55
    for _ in range(6):  # six turns wait: they take the slots freed at NOW+60
        assert scheduler.poll(new_ticket(), "y")[0] is None
    assert admission.expected_wait(registry, owner="y", max_concurrent=2, rpm=3, now=NOW + 5) == 115
    with pytest.raises(RateLimited) as refused:
        admission.admit(registry, owner="y", max_concurrent=2, rpm=3, max_wait=30, now=NOW + 5)
    assert refused.value.retry_after == 110  # back 5 s (PROMISE_LEAD) before its slot: admitted
    # The operator reading the 429 learns which limits bind and where to look (#17).
    message = str(refused.value)
    assert "ACCOUNT_RPM=3" in message and "ACCOUNT_MAX_CONCURRENT=2" in message
    assert "GET /admin/accounts" in message
    # Another key is served after y's first waiting turn, not after y's whole flood.
    assert admission.expected_wait(registry, owner="z", max_concurrent=2, rpm=3, now=NOW + 5) == 55


def test_no_ready_account_is_left_to_the_worker(redis_client: Redis) -> None:
    registry, _ = pool(redis_client, 1, 12)
    registry.update("env-1", enabled=False)
    assert admission.expected_wait(registry, max_concurrent=2, rpm=12, now=NOW) is None


def test_refused_clients_get_distinct_places_and_each_is_admitted_when_it_comes_back(
    redis_client: Redis,
) -> None:
    clock = [NOW]
    registry = Registry(redis_client, namespace="adm", secret_key="k" * 32, clock=lambda: clock[0])
    registry.seed(["_U=a0", "_U=a1"])
    scheduler = Scheduler(
        registry, max_concurrent=100, rpm=3, lease_seconds=10, clock=lambda: clock[0], sleep=lambda s: None
    )
    limits: dict[str, Any] = {"max_concurrent": 100, "rpm": 3}

    def start_turn(owner: str) -> None:  # what a worker does: take a slot, end the door's claim
        lease = scheduler.acquire(owner)
        assert lease is not None
        admission.started(redis_client, registry.prefix, owner)
        scheduler.release(lease)

    def fits(owner: str) -> None:  # never more admitted work than the pool starts within the wait
        admitted = redis_client.zcard(f"{registry.prefix}:door:pending:{owner}")
        calendar = admission.slots(registry, now=clock[0], **limits)
        assert admitted <= sum(1 for slot in calendar if slot <= clock[0] + 30)

    for n in range(6):  # the pool's minute is spent, one start a second: slots free at NOW+60…65
        clock[0] = NOW + n
        start_turn("x")
    clock[0] = NOW + 10
    returns = []
    for _ in range(8):
        with pytest.raises(RateLimited) as refused:
            admission.admit(registry, owner="y", max_wait=30, now=clock[0], **limits)
        assert refused.value.retry_after is not None
        returns.append(clock[0] + refused.value.retry_after)
    # Spread out, not a herd: the 8 places are the pool's next 8 slots, each PROMISE_LEAD early.
    assert returns == [NOW + 55 + n for n in range(6)] + [NOW + 115, NOW + 116]
    # Another key is placed fairly (after y's first claim), not behind all of y's eight.
    assert admission.expected_wait(registry, owner="z", now=clock[0], **limits) == 51

    for turn, back in enumerate(returns):
        if turn == 6:  # the first six, admitted, took their slots at NOW+60…65
            for n in range(6):
                clock[0] = NOW + 60 + n
                start_turn("y")
        clock[0] = back
        admission.admit(registry, owner="y", max_wait=30, now=back, **limits)  # admitted: no 429
        fits("y")
        # A newcomer of the same key is placed behind every admitted turn and every promise.
        claims = sum(
            redis_client.zcard(f"{registry.prefix}:door:{kind}:y") for kind in ("pending", "promised")
        )
        calendar = admission.slots(registry, now=back, **limits)
        assert admission.expected_wait(registry, owner="y", now=back, **limits) == calendar[claims] - back
        if turn < 5:  # while promises fill the next 30 s, that is beyond the allowed wait
            assert calendar[claims] - back > 30, turn


def test_a_started_turn_ends_its_claim(redis_client: Redis) -> None:
    registry, _ = pool(redis_client, 1, 1)
    admission.admit(registry, owner="y", max_concurrent=2, rpm=1, max_wait=30, now=NOW)
    assert admission.expected_wait(registry, owner="y", max_concurrent=2, rpm=1, now=NOW) == 60
    admission.started(redis_client, registry.prefix, "y")
    assert admission.expected_wait(registry, owner="y", max_concurrent=2, rpm=1, now=NOW) == 0
