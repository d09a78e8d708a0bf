"""Per-account capacity in Redis, the same for every worker process on every machine.

Two limits per account, `ACCOUNT_MAX_CONCURRENT` and `ACCOUNT_RPM` unless the account
overrides them:

    …:leases:<id>  ZSET lease id -> expiry   a semaphore whose slots expire: the turn's
                                             watcher refreshes its lease; a worker that
                                             crashed stops refreshing and its slot frees
                                             itself within the lease time
    …:rate:<id>    ZSET lease id -> start    a sliding-minute bucket of turn starts

Slots are taken only by the scheduler's Lua script (`scheduler.ADMIT`), which checks
both limits and takes both in one atomic step; this module names the keys and does the
rest: refresh, release, and the counts the admin API shows.
"""

from __future__ import annotations

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


def release(redis: Redis, prefix: str, account_id: str, lease: str) -> None:
    """Give the slot back (the rate entry stays: the turn did start)."""
    redis.zrem(leases_key(prefix, account_id), lease)


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


def starts(redis: Redis, prefix: str, account_ids: list[str], now: float) -> dict[str, list[float]]:
    """Start times in the current window per account (oldest first), for wait estimates."""
    with redis.pipeline(transaction=False) as pipe:
        for account_id in account_ids:
            pipe.zrangebyscore(
                rate_key(prefix, account_id), f"({now - WINDOW_SECONDS}", "+inf", withscores=True
            )
        rows = pipe.execute()
    return {
        account_id: [score for _, score in row] for account_id, row in zip(account_ids, rows, strict=True)
    }
