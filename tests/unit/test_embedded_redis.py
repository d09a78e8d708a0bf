"""The embedded redis-server: throwaway for tests, persistent and password-protected for `deploy/start`."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis, read_or_create_secret


def test_a_throwaway_server_needs_no_password_and_leaves_nothing_behind() -> None:
    server = EmbeddedRedis().start()
    directory = Path(server._dir)
    try:
        assert Redis(port=server.port).ping()
        assert not (directory / "appendonly.aof").exists()
    finally:
        server.stop()
    assert not directory.exists()


def test_a_persistent_server_keeps_its_data_and_requires_its_password(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    password = read_or_create_secret(tmp_path / "redis_password")
    server = EmbeddedRedis(data_dir=data, password=password).start()
    try:
        Redis.from_url(server.url).set("conv:kept", "yes")
        with pytest.raises(redis.AuthenticationError):
            Redis(port=server.port).get("conv:kept")
        assert server.process is not None
        assert password.encode() not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert password not in server.address
    finally:
        server.stop()
    assert (data / "redis.conf").stat().st_mode & 0o077 == 0
    assert (tmp_path / "redis_password").stat().st_mode & 0o077 == 0

    again = EmbeddedRedis(data_dir=data, password=read_or_create_secret(tmp_path / "redis_password")).start()
    try:
        assert Redis.from_url(again.url).get("conv:kept") == b"yes"
    finally:
        again.stop()


def test_the_launchers_server_has_a_memory_limit_and_the_eviction_policy(tmp_path: Path) -> None:
    from service.runtime.embedded_redis import EVICTION_POLICY

    with EmbeddedRedis(data_dir=tmp_path / "redis", password="p" * 20, maxmemory="64mb") as server:
        client = Redis.from_url(server.url)
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == EVICTION_POLICY
        client.close()
