"""Per-account capacity in Redis, the same for every worker process on every machine.

Two limits per account, `ACCOUNT_MAX_CONCURRENT` and `ACCOUNT_RPM` unless the account
overrides them:

    …:leases:<id>  ZSET lease id -> expiry   a semaphore whose slots expire: the turn's
                                             watcher refreshes its lease; a worker that
                                             crashed stops refreshing and its slot frees
                                             itself within the lease time
    …:rate:<id>    ZSET lease id -> start    a sliding-minute bucket of turn starts
    …:durations    LIST of seconds           how long the last turns held their slot (for
                                             the door's estimate when concurrency binds)

Slots are taken only by the scheduler's Lua script (`fair_line.ADMIT`), which checks
both limits and takes both in one atomic step; this module names the keys and does the
rest: refresh, release, and the counts the admin API shows.
"""

from __future__ import annotations

import dataclasses

from redis import Redis
from redis.client import Pipeline

WINDOW_SECONDS = 60.0


def leases_key(prefix: str, account_id: str) -> str:
    """The semaphore of one account."""
    return f"{prefix}:leases:{account_id}"


def rate_key(prefix: str, account_id: str) -> str:
    """The sliding-minute bucket of one account."""
    return f"{prefix}:rate:{account_id}"


def refresh(pipe: Redis | Pipeline, prefix: str, account_id: str, lease: str, *, expires: float) -> None:
    """Push a held lease's expiry out (only if it is still held: XX)."""
    pipe.zadd(leases_key(prefix, account_id), {lease: expires}, xx=True)


def note_turn(redis: Redis, prefix: str, account_id: str, member: str, *, now: float) -> None:
    """One more upstream turn started under a held lease (a priming part, a repair): one more entry
    of the account's sliding minute, so ACCOUNT_RPM counts every turn the upstream sees."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(rate_key(prefix, account_id), {member: now})
        pipe.expire(rate_key(prefix, account_id), int(2 * WINDOW_SECONDS) + 1)
        pipe.execute()


DURATIONS_KEPT = 50


def durations_key(prefix: str) -> str:
    """The pool's recent turn durations (newest first)."""
    return f"{prefix}:durations"


def release(redis: Redis, prefix: str, account_id: str, lease: str, *, now: float | None = None) -> None:
    """Give the slot back (the rate entry stays: the turn did start) and note how long it was held."""
    started = redis.zscore(rate_key(prefix, account_id), lease) if now is not None else None
    with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(leases_key(prefix, account_id), lease)
        if started is not None and now is not None:
            pipe.lpush(durations_key(prefix), repr(max(0.0, now - started)))
            pipe.ltrim(durations_key(prefix), 0, DURATIONS_KEPT - 1)
        pipe.execute()


def usage(redis: Redis, prefix: str, account_ids: list[str], now: float) -> dict[str, tuple[int, int]]:
    """(turns in flight, turns started in the last minute) per account."""
    with redis.pipeline(transaction=False) as pipe:
        for account_id in account_ids:
            pipe.zcount(leases_key(prefix, account_id), f"({now}", "+inf")
            pipe.zcount(rate_key(prefix, account_id), f"({now - WINDOW_SECONDS}", "+inf")
        counts = pipe.execute()
    return {
        account_id: (int(counts[2 * i]), int(counts[2 * i + 1])) for i, account_id in enumerate(account_ids)
    }


@dataclasses.dataclass(frozen=True)
class Load:
    """What the door's estimate reads of the pool: per account, the starts in the current
    minute and when each turn holding a slot started; and the median turn duration."""

    starts: dict[str, list[float]]
    in_flight: dict[str, list[float]]
    turn_seconds: float


def load(redis: Redis, prefix: str, account_ids: list[str], now: float, *, default_seconds: float) -> Load:
    """Read the pool's load in one round trip.

    It runs on every request at the door, ahead of the first token, so the reads share a
    pipeline. Each account's whole rate set is read (the grant's script keeps it to about
    a minute): its recent starts, and the start of every turn holding a slot (same member).
    """
    with redis.pipeline(transaction=False) as pipe:
        for account_id in account_ids:
            pipe.zrange(rate_key(prefix, account_id), 0, -1, withscores=True)
            pipe.zrangebyscore(leases_key(prefix, account_id), f"({now}", "+inf")
        pipe.lrange(durations_key(prefix), 0, -1)
        replies = pipe.execute()
    rows, held, durations = replies[0:-1:2], replies[1:-1:2], replies[-1]
    recent = sorted(float(value) for value in durations)
    since = now - WINDOW_SECONDS
    return Load(
        starts={
            account_id: [score for _, score in row if score > since]
            for account_id, row in zip(account_ids, rows, strict=True)
        },
        # now if a holder's start is gone from the rate set
        in_flight={
            account_id: [dict(row).get(lease, now) for lease in leases]
            for account_id, row, leases in zip(account_ids, rows, held, strict=True)
        },
        turn_seconds=recent[len(recent) // 2] if recent else default_seconds,
    )
