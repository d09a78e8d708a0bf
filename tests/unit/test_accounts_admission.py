"""The door's expected-wait estimate against a real redis-server (the clock is the test's)."""

from __future__ import annotations

import pytest
from redis import Redis

from service.accounts import admission
from service.accounts.registry import Registry
from service.accounts.scheduler import Scheduler, new_ticket
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
    assert refused.value.retry_after == 85  # a client back then expects 30 s: admitted
    # Another key is served after y's first waiting turn, not after y's whole flood.
    assert admission.expected_wait(registry, owner="z", max_concurrent=2, rpm=3, now=NOW + 5) == 55


def test_no_ready_account_is_left_to_the_worker(redis_client: Redis) -> None:
    registry, _ = pool(redis_client, 1, 12)
    registry.update("env-1", enabled=False)
    assert admission.expected_wait(registry, max_concurrent=2, rpm=12, now=NOW) is None
