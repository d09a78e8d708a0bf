"""A rolling hour of per-minute counters in Redis, for the operator console's Live page.

Prometheus counters live in each process (and each worker serves its own port), so
nothing in one place can answer "how many turns failed, and why, in the last hour"
without a Prometheus server. This module keeps exactly that, shared by every process:

    live:<queue>:<minute>  HASH  turns:<outcome>, err:<class>, http:<status>,
                                 added_ms / added_n (gateway-added time to first token),
                                 wait_ms / wait_n (queue wait)

One pipelined write per event, each key expiring after an hour and a bit. Recording is
best effort: a Redis failure here is logged and never fails a turn. The error classes
are exception class names and HTTP statuses, so the number of fields stays bounded.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

MINUTES = 60
TTL_SECONDS = MINUTES * 60 + 300

# The Redis client and queue name of the turn this greenlet runs (set by the worker's job wrapper).
_bound: contextvars.ContextVar[tuple[Redis, str] | None] = contextvars.ContextVar("livestats", default=None)
_held: contextvars.ContextVar[tuple[list[tuple[str, int]], list[tuple[str, float]]] | None] = (
    contextvars.ContextVar("livestats_held", default=None)
)


def minute_key(queue: str, minute: int) -> str:
    """The hash of one minute (`minute` = epoch seconds // 60)."""
    return f"live:{queue}:{minute}"


def bind(redis: Redis | None, queue: str) -> None:
    """Record this greenlet's later events in `redis` under `queue` (None: record nothing)."""
    _bound.set((redis, queue) if redis is not None else None)


def hold() -> None:
    """Keep this greenlet's records until `flush`: a turn writes its counters once, at its end,
    so none of them costs a Redis round trip on the way to its first token."""
    _held.set(([], []))


def flush() -> None:
    """Write what `hold` kept (one pipelined round trip) and stop holding."""
    held = _held.get()
    _held.set(None)
    if held is not None and (held[0] or held[1]):
        bound = _bound.get()
        if bound is not None:
            _write(bound[0], bound[1], held[0], held[1], time.time())


def record(
    redis: Redis | None = None,
    queue: str = "",
    *,
    counts: Mapping[str, int] | None = None,
    sums: Mapping[str, float] | None = None,
    now: float | None = None,
) -> None:
    """Add `counts` (field -> n) and `sums` (field -> ms, each also counted in `<prefix>_n`)."""
    if redis is None:
        held = _held.get()
        if held is not None:  # a turn in progress: written with the others at its end
            held[0].extend((counts or {}).items())
            held[1].extend((sums or {}).items())
            return
        bound = _bound.get()
        if bound is None:
            return
        redis, queue = bound
    _write(redis, queue, list((counts or {}).items()), list((sums or {}).items()), now)


def _write(
    redis: Redis,
    queue: str,
    counts: list[tuple[str, int]],
    sums: list[tuple[str, float]],
    now: float | None,
) -> None:
    key = minute_key(queue, int((time.time() if now is None else now) // 60))
    try:
        with redis.pipeline(transaction=False) as pipe:
            for field, n in counts:
                pipe.hincrby(key, field, n)
            for field, value in sums:
                pipe.hincrbyfloat(key, f"{field}_ms", round(value * 1000.0, 3))
                pipe.hincrby(key, f"{field}_n", 1)
            pipe.expire(key, TTL_SECONDS)
            pipe.execute()
    except RedisError as exc:
        log.debug("event=livestats_failed error=%s", exc.__class__.__name__)


def read(
    redis: Redis, queue: str, *, now: float | None = None, minutes: int = MINUTES
) -> list[dict[str, Any]]:
    """The last `minutes` minutes, oldest first: turns by outcome, errors by class, mean times."""
    current = int((time.time() if now is None else now) // 60)
    starts = list(range(current - minutes + 1, current + 1))
    with redis.pipeline(transaction=False) as pipe:
        for minute in starts:
            pipe.hgetall(minute_key(queue, minute))
        raw = pipe.execute()
    return [_minute(minute * 60, fields) for minute, fields in zip(starts, raw, strict=True)]


def _minute(start: int, raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    fields = {key.decode(): float(value) for key, value in raw.items()}
    turns = {k.split(":", 1)[1]: int(v) for k, v in fields.items() if k.startswith("turns:")}
    errors = {k.split(":", 1)[1]: int(v) for k, v in fields.items() if k.startswith(("err:", "http:"))}
    errors = {(f"HTTP {k}" if k.isdigit() else k): v for k, v in errors.items()}
    return {
        "start": start,
        "turns": turns,
        "errors": errors,
        "added_first_token_ms": _mean(fields, "added"),
        "queue_wait_ms": _mean(fields, "wait"),
    }


def _mean(fields: Mapping[str, float], name: str) -> float | None:
    n = fields.get(f"{name}_n", 0.0)
    return round(fields.get(f"{name}_ms", 0.0) / n, 1) if n else None
