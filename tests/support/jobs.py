"""Job functions for exercising the worker pool itself (not turns), run by real workers."""

from __future__ import annotations

import time

from workers.context import current_context


def track(key: str, seconds: float) -> str:
    """Count how many of these run at once (max in `{key}:max`), sleeping `seconds`."""
    redis = current_context().redis
    running = redis.incr(f"{key}:running")
    redis.eval(
        "if tonumber(redis.call('get', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
        "redis.call('set', KEYS[1], ARGV[1]) end",
        1,
        f"{key}:max",
        running,
    )
    time.sleep(seconds)
    redis.decr(f"{key}:running")
    redis.rpush(f"{key}:done", "1")
    return "ok"


def fail(message: str) -> None:
    """Raise, so the job must land in the failed registry."""
    raise RuntimeError(message)
