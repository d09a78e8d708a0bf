"""Redis connections, created explicitly by entry points and passed to whoever needs them.

A blocking pool caps the connections one process opens (the pub/sub listener and RQ's
dequeue each hold one more): greenlets wait briefly for a free connection instead of
opening a new one each, which keeps a busy process within a handful of connections.
"""

from __future__ import annotations

from redis import BlockingConnectionPool, Redis


def connect(url: str, *, max_connections: int = 12, timeout: float = 10.0) -> Redis:
    """A client for `url` whose pool never exceeds `max_connections`."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=0,
    )
    return Redis(connection_pool=pool)
