"""Redis connections, created explicitly by entry points and passed to whoever needs them.

A blocking pool caps the connections one process opens (the pub/sub listener and RQ's
dequeue each hold one more): greenlets wait briefly for a free connection instead of
opening a new one each, which keeps a busy process within a handful of connections.
"""

from __future__ import annotations

import os

from redis import BlockingConnectionPool, Redis


def connect(url: str, *, role: str, max_connections: int = 12, timeout: float = 10.0) -> Redis:
    """A client for `url` whose pool never exceeds `max_connections`.

    Every connection is named `<role>:<pid>` (CLIENT SETNAME), so `CLIENT LIST` shows
    which process holds which connection — how the benchmark counts them, and how an
    operator finds a leak.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        client_name=f"{role}:{os.getpid()}",
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=0,
    )
    return Redis(connection_pool=pool)
