"""What a worker process shares between its jobs: settings and one Redis pool.

Jobs are thin and rebuild what they need, but a fresh Redis connection per turn would
defeat the point of running a hundred turns in one process; so the pool is built once
per process, lazily, from the same environment the entry point parsed.
"""

from __future__ import annotations

import dataclasses
import os

from redis import Redis

from service.runtime.redis_conn import connect
from service.runtime.settings import Settings, SettingsError, load_settings


@dataclasses.dataclass(frozen=True)
class WorkerContext:
    """Settings and the Redis client every job in this process uses."""

    settings: Settings
    redis: Redis


_current: WorkerContext | None = None


def build_context(settings: Settings, *, max_connections: int = 12) -> WorkerContext:
    """Create the process's context; the Redis pool connects on first use."""
    if not settings.redis_configured:
        raise SettingsError("REDIS_URL (or REDIS_SENTINELS) is required for a worker (the launcher sets it)")
    redis = connect(
        settings.redis_url, role="worker", max_connections=max_connections, sentinel=settings.sentinel
    )
    return WorkerContext(settings=settings, redis=redis)


def set_context(context: WorkerContext) -> None:
    """Install the context jobs of this process will use (entry points and tests)."""
    global _current
    _current = context


def current_context() -> WorkerContext:
    """The installed context, or one built from `os.environ` on first use."""
    global _current
    if _current is None:
        _current = build_context(load_settings(os.environ))
    return _current
