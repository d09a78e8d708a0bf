"""Fixtures shared by the whole suite: real services on loopback, nothing mocked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from workers.upstream import socket_park


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One real redis-server process for the session."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The session's Redis, flushed before each test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[Redis]:
    """A plain client on the flushed Redis."""
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    """One ChatHub simulator process for the session (state is NOT reset between tests)."""
    with SimulatorProcess() as process:
        yield process


@pytest.fixture()
def sim(simulator: SimulatorProcess) -> Iterator[SimulatorProcess]:
    """The session's simulator, reset (conversations, counters, config) before the test.

    Upstream sockets this process parked in an earlier test (`socket_park`) are closed first,
    so they count in no later test's socket numbers.
    """
    socket_park.clear_all()
    simulator.reset()
    yield simulator
