"""Fixtures shared by the whole suite: real services on loopback, nothing mocked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from service.embedded_redis import EmbeddedRedis


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
