"""Redis connections, created explicitly by entry points and passed to whoever needs them.

A blocking pool caps the connections one process opens (the pub/sub listener and RQ's
dequeue each hold one more): greenlets wait briefly for a free connection instead of
opening a new one each, which keeps a busy process within a handful of connections.

With Redis Sentinel (`REDIS_SENTINELS`) the same capped pool asks the Sentinels where
the primary is whenever it opens a connection (redis-py's `SentinelConnectionPool`), so
after a failover every new connection goes to the promoted replica; connections to the
old primary fail once and are replaced, and nothing in the process needs a restart.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import BlockingConnectionPool, Redis
from redis.sentinel import Sentinel, SentinelConnectionPool
from redis.typing import EncodableT, FieldT

from service.runtime import trace
from service.runtime.settings import SentinelConfig

HashFields = dict[FieldT, EncodableT]
"""A hash's fields as `hset(mapping=...)` takes them.

redis-py types that parameter `Mapping[FieldT, EncodableT]`, whose key type is invariant: a
`dict[str, str]` is refused, so dicts built for HSET are annotated with this alias.
"""


def text(reply: bytes | str) -> str:
    """A string reply as `str`.

    Our clients return bytes (RQ needs `decode_responses=False`); redis-py's types cannot know
    that and say `bytes | str`.
    """
    return reply.decode() if isinstance(reply, bytes) else reply


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel-backed pool with `BlockingConnectionPool`'s cap and wait.

    `SentinelConnectionPool` extends the unbounded `ConnectionPool`; mixing in the blocking
    pool (its `__init__`, `reset`, `get_connection`, `release` and `disconnect`) keeps the
    per-process connection ceiling while Sentinel still chooses each connection's address.
    """


def connect(
    url: str | None,
    *,
    role: str,
    max_connections: int = 12,
    timeout: float = 10.0,
    sentinel: SentinelConfig | None = None,
) -> Redis:
    """A client for `url` (or the Sentinel-managed primary) whose pool never exceeds `max_connections`.

    Every connection is named `<role>:<pid>` (CLIENT SETNAME), so `CLIENT LIST` shows
    which process holds which connection — how the benchmark counts them, and how an
    operator finds a leak.
    """
    options: dict[str, Any] = {
        "client_name": f"{role}:{os.getpid()}",
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    if sentinel is not None:
        client = _sentinel_client(url, sentinel, role=role, options=options)
    elif url is None:
        raise ValueError("a Redis URL or a Sentinel configuration is required")
    else:
        client = Redis(connection_pool=BlockingConnectionPool.from_url(url, **options))
    pool = client.connection_pool  # round trips count towards the current turn's trace
    pool.connection_class = trace.counting(pool.connection_class)
    return client


def _sentinel_client(
    url: str | None, sentinel: SentinelConfig, *, role: str, options: dict[str, Any]
) -> Redis:
    """A client whose connections go wherever the Sentinels say the primary is.

    Sentinel queries use short timeouts so an unreachable Sentinel is skipped quickly
    for the next one; the primary's credentials and db come from `url` when it is given.
    """
    # redis-py leaves Sentinel's constructor and `master_for` unannotated.
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinel.addresses),
        sentinel_kwargs={
            "password": sentinel.password or None,
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
            "client_name": f"{role}-sentinel:{os.getpid()}",
        },
    )
    client: Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        sentinel.master,
        redis_class=Redis,
        connection_pool_class=BlockingSentinelConnectionPool,
        **options,
        **_url_credentials(url),
    )
    return client


def _url_credentials(url: str | None) -> dict[str, Any]:
    """Username, password, db and TLS from a `redis://` URL; its host and port are not used."""
    if not url:
        return {}
    parts = urlsplit(url)
    found: dict[str, Any] = {}
    if parts.username:
        found["username"] = unquote(parts.username)
    if parts.password:
        found["password"] = unquote(parts.password)
    path = parts.path.strip("/")
    if path.isdigit():
        found["db"] = int(path)
    if parts.scheme == "rediss":
        found["ssl"] = True
    return found
