"""Redis connections, created explicitly by entry points and passed to whoever needs them.

A blocking pool caps the connections one process opens (the pub/sub listener and RQ's
dequeue each hold one more): greenlets wait briefly for a free connection instead of
opening a new one each, which keeps a busy process within a handful of connections.
"""

from __future__ import annotations

import os

from redis import BlockingConnectionPool, Redis
from redis.typing import EncodableT, FieldT

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
