"""Admission at the door: refuse a turn at once when its expected wait for an account is too long.

The web tier asks before it enqueues. The estimate assumes the pool's rate limit binds
(true at the defaults: 2 turns in flight × a few seconds each allow more than 12 turns a
minute): every ready account can start `rpm` turns in any minute, so its future start
times are its free rate slots now, then each recorded start plus one minute, then the
same again a minute later, and so on. Merging those over the ready accounts, the turn
that the fair line puts behind `Q` waiting ones starts at the (Q+1)-th earliest time.

Above `QUEUE_MAX_WAIT_SECONDS` the answer is 429 `rate_limit_exceeded` with
`Retry-After` = that wait minus the allowed wait: a client that comes back then finds
the line drained by as much (if nobody else arrived) and is admitted.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator

from service.accounts import capacity
from service.accounts.registry import READY, Registry
from service.errors import RateLimited


def expected_wait(
    registry: Registry, *, owner: str = "", max_concurrent: int, rpm: int, now: float
) -> float | None:
    """Seconds until a turn of `owner` arriving now would start; None when no account is ready
    (the worker answers that with the pool's own error).

    The turns ahead of it are those the fair line would serve first: tagged at or below the
    tag it would get (`scheduler.ADMIT`), so one key's flood does not close the door on others.
    """
    ready = [a for a in registry.all() if a.state(now) == READY]
    if not ready:
        return None
    ids = [a.id for a in ready]
    line = f"{registry.prefix}:line"
    with registry.redis.pipeline(transaction=False) as pipe:
        pipe.get(f"{line}:vt")
        pipe.hget(f"{line}:tags", owner)
        virtual, last = pipe.execute()
    tag = max(float(virtual or 0), float(last or 0)) + 1
    waiting = int(registry.redis.zcount(line, "-inf", tag))
    starts = capacity.starts(registry.redis, registry.prefix, ids, now)
    streams = [_start_times(starts[a.id], a.limits(max_concurrent, rpm)[1], now) for a in ready]
    for position, start in enumerate(heapq.merge(*streams)):
        if position == waiting:
            return max(0.0, start - now)
    return None  # unreachable: the streams are endless


def _start_times(recent: list[float], rpm: int, now: float) -> Iterator[float]:
    """When one account can start its next turns (sliding minute of `rpm` starts)."""
    recent = sorted(recent)[-rpm:]
    base = [now] * (rpm - len(recent)) + [start + capacity.WINDOW_SECONDS for start in recent]
    cycle = 0
    while True:
        for start in base:
            yield max(now, start) + cycle * capacity.WINDOW_SECONDS
        cycle += 1


def admit(
    registry: Registry, *, owner: str = "", max_concurrent: int, rpm: int, max_wait: float, now: float
) -> None:
    """Raise 429 with a computed `Retry-After` if the expected wait exceeds `max_wait`."""
    wait = expected_wait(registry, owner=owner, max_concurrent=max_concurrent, rpm=rpm, now=now)
    if wait is None or wait <= max_wait:
        return
    retry_after = max(1.0, math.ceil(wait - max_wait))
    raise RateLimited(
        f"Every upstream account is busy: a new turn would wait about {math.ceil(wait)} s for one "
        f"(more than QUEUE_MAX_WAIT_SECONDS={max_wait:g}); retry in {retry_after:.0f} s.",
        retry_after=retry_after,
    )
