"""Redis Sentinel: strict settings, and a real failover the client rides out without a restart.

The failover runs a real primary, replica and three Sentinels (the same redis-server
binary) on loopback, SIGKILLs the primary and waits for the Sentinels to promote the
replica; the client built by `connect()` must then reach the new primary on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from service.runtime import settings_parsers
from service.runtime.embedded_redis import free_port
from service.runtime.redis_conn import BlockingSentinelConnectionPool, connect
from service.runtime.settings import SentinelConfig, SettingsError, load_settings
from tests.support.sentinel import MASTER, SentinelCluster

LOOPBACK = "127.0.0.1"


def test_sentinel_settings_are_parsed_strictly() -> None:
    settings = load_settings(
        {
            "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380,sentinel-c:5000",
            "REDIS_SENTINEL_MASTER": "gateway",
            "REDIS_SENTINEL_PASSWORD": "s3cret",
        }
    )
    assert settings.redis_url is None and settings.redis_configured
    assert settings.sentinel == SentinelConfig(
        (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 5000)), "gateway", "s3cret"
    )
    assert load_settings({}).sentinel is None and not load_settings({}).redis_configured


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "REDIS_SENTINEL_MASTER is required"),
        ({"REDIS_SENTINEL_MASTER": "gateway"}, "REDIS_SENTINELS is not"),
        ({"REDIS_SENTINELS": "10.0.0.1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS='10.0.0.1'"),
        ({"REDIS_SENTINELS": "h:0", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS="),
        ({"REDIS_SENTINELS": "h:99999", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS="),
        ({"REDIS_SENTINELS": ":26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS="),
        (
            {"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///tmp/r.sock"},
            "REDIS_URL must be redis://",
        ),
    ],
)
def test_bad_sentinel_settings_name_the_key(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace("[", r"\[").replace("?", r"\?")):
        load_settings(environ)


def test_sentinel_password_is_treated_as_a_secret() -> None:
    assert "REDIS_SENTINEL_PASSWORD" in settings_parsers.SECRET_KEYS


def test_credentials_and_db_come_from_redis_url_with_sentinels() -> None:
    config = SentinelConfig(((LOOPBACK, 1),), MASTER)
    client = connect("redis://user:p%40ss@ignored-host:1/3", role="web", sentinel=config, max_connections=4)
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert pool.max_connections == 4
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("user", "p@ss", 3)
    assert kwargs["client_name"].startswith("web:")


@pytest.fixture()
def cluster() -> Iterator[SentinelCluster]:
    ports = [free_port() for _ in range(5)]
    nodes = SentinelCluster(
        (LOOPBACK, ports[0]), (LOOPBACK, ports[1]), [(LOOPBACK, port) for port in ports[2:]]
    ).start()
    try:
        yield nodes
    finally:
        nodes.stop()


def _until_ok(call: object, timeout: float = 40.0) -> tuple[object, int]:
    """Retry `call` through a failover; return its result and how many attempts failed."""
    failures = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(), failures  # type: ignore[operator]
        except RedisError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_client_follows_a_failover_without_restart(cluster: SentinelCluster) -> None:
    config = SentinelConfig(tuple(node.address for node in cluster.sentinels), MASTER)
    client = connect(None, role="failover-test", sentinel=config, max_connections=4, timeout=5)
    capped = connect(None, role="capped", sentinel=config, max_connections=1, timeout=0.2)
    held = capped.connection_pool.get_connection()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        capped.ping()  # the cap holds: a second connection waits, then gives up
    capped.connection_pool.release(held)
    assert capped.ping()
    capped.close()
    client.set("before", "kept")
    assert client.wait(1, 5000) == 1  # the replica has it: a write acked only by the primary could be lost
    pool: Any = client.connection_pool  # a SentinelConnectionPool; typed as the base class
    assert pool.get_master_address() == cluster.primary.address

    cluster.primary.kill()
    value, failures = _until_ok(lambda: client.get("before"))

    assert value == b"kept"
    assert failures >= 1  # the dead primary was really in the way
    assert cluster.master_address() == cluster.replica.address
    assert pool.get_master_address() == cluster.replica.address
    client.set("after", "written")  # the promoted replica takes writes
    direct = cluster.replica.client()
    try:
        assert direct.get("after") == b"written"
        names = [entry["name"] for entry in direct.client_list()]
        assert any(name.startswith("failover-test:") for name in names)  # CLIENT SETNAME still applied
    finally:
        direct.close()
    # Pub/sub (the relay hub's connection) also finds the new primary.
    channel = "failover-test-channel"
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        _until_ok(lambda: client.publish(channel, "hello"))
        deadline = time.monotonic() + 10
        payloads = []
        while time.monotonic() < deadline and b"hello" not in payloads:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                payloads.append(message["data"])
        assert b"hello" in payloads
    finally:
        pubsub.close()
        client.close()
