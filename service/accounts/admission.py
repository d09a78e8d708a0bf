"""Admission at the door: admit a turn only if it will start within the allowed wait, else 429
with a `Retry-After` that is a *reservation*.

The pool's future start times (its *slots*) come from its binding constraint, per ready
account: a turn may start when both a rate slot (`rpm` starts in any minute) and a
concurrency slot (`max_concurrent` in flight, each held for about the median recent turn
duration) are free. Merged over the ready accounts they are the calendar the door fills.

What already claims those slots, per owner (API key), in Redis:

    …:door:pending:<owner>   ZSET id -> expiry   turns admitted and not yet started: in RQ,
                                                 in a worker, or in the fair line (the
                                                 worker removes one when its turn takes a
                                                 slot or stops waiting: `started`)
    …:door:promised:<owner>  ZSET id -> time     reservations handed out with 429s
    …:door:owners            ZSET owner -> seen  whose sets to look at

A new turn of owner `o` comes in round n+1 of the fair line, n being o's claims (or how
far o's fair-line tags run ahead, if more: a key served ahead of the others waits). It is
admitted (a pending claim) if its slot is within `QUEUE_MAX_WAIT_SECONDS` even when every
other owner with a claim puts a turn in each round ahead of it (they may: the line is
fair, so a key's later turns overtake another key's flood); that bound is what keeps
admitted waits under the limit. Else it is promised that same place (the latest others may
push it to) and `Retry-After`, a whole number of seconds, sends it back
`PROMISE_LEAD` seconds before that slot: it waits at home, not in the line. Promises
are claims, so the next refused client is promised a later slot (no herd) and a
newcomer cannot take a promised place. A request of `o` arriving when one of o's
promises is due takes it and is admitted: a client that waits exactly `Retry-After`
gets in. A promise nobody claims lapses `PROMISE_GRACE` seconds after its time. One
Lua script (`service.accounts.door`) decides and writes, so web processes agree; this
module is its Python face and keeps `slots`, the reference calendar the script follows.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator

from redis import Redis

from service.accounts import capacity, door, groups
from service.accounts.account import READY
from service.accounts.door import DEFAULT_TURN_SECONDS, SLOTS
from service.accounts.registry import Registry
from service.errors import RateLimited


def expected_wait(
    registry: Registry, *, owner: str = "", max_concurrent: int, rpm: int, now: float
) -> float | None:
    """Seconds until a new turn of `owner` arriving now would start (read only); None when no
    account is ready (the worker answers that with the pool's own error)."""
    decision = door.decide(registry, owner, max_concurrent, rpm, max_wait=math.inf, now=now, write=False)
    return None if decision is None else decision[1]


def admit(
    registry: Registry,
    *,
    owner: str = "",
    max_concurrent: int,
    rpm: int,
    max_wait: float,
    now: float,
    group: str = groups.DEFAULT_GROUP,
) -> None:
    """Admit (a pending claim) or raise 429 with the `Retry-After` of a reservation.

    Only `group`'s accounts count; a group with no account at all is a 503 naming it.
    """
    check_group(registry, group)
    decision = door.decide(
        registry, owner, max_concurrent, rpm, max_wait=max_wait, now=now, write=True, group=group
    )
    if decision is None or decision[0]:
        return
    raise refusal(decision, now=now, max_wait=max_wait, rpm=rpm, max_concurrent=max_concurrent)


def check_group(registry: Registry, group: str) -> None:
    """503 naming `group` when the pool has accounts but none in it (from the pool's snapshot)."""
    accounts = registry.all()
    if accounts and not groups.members(accounts, group):
        raise groups.empty_group(group)


def refusal(
    decision: tuple[bool, float, float], *, now: float, max_wait: float, rpm: int, max_concurrent: int
) -> RateLimited:
    """The 429 for a turn the door refused, its `Retry-After` the reservation it was promised."""
    _, wait, at = decision
    retry_after = max(1.0, math.ceil(at - now))
    return RateLimited(
        f"Every upstream account is busy: a new turn would wait about {math.ceil(wait)} s for one "
        f"(more than QUEUE_MAX_WAIT_SECONDS={max_wait:g}); retry in {retry_after:.0f} s, when a place "
        f"is kept for this key. Each account starts at most ACCOUNT_RPM={rpm} turns a minute and runs "
        f"ACCOUNT_MAX_CONCURRENT={max_concurrent} at once unless set per account: GET /admin/accounts "
        "shows their load; raise the limits there or add an account.",
        retry_after=retry_after,
    )


def pending_key(prefix: str, owner: str) -> str:
    """The door's claims of `owner`'s admitted turns that have not started."""
    return f"{prefix}:door:pending:{owner}"


def started(redis: Redis, prefix: str, owner: str) -> None:
    """One of `owner`'s admitted turns took its slot or stopped waiting: its claim ends.

    (A turn granted a slot ends it inside the scheduler's script: `Scheduler.acquire(door=…)`.)
    """
    redis.zpopmin(pending_key(prefix, owner))


def slots(
    registry: Registry,
    *,
    max_concurrent: int,
    rpm: int,
    now: float,
    count: int = SLOTS,
    group: str = groups.DEFAULT_GROUP,
) -> list[float]:
    """The group's next `count` start times over its ready accounts (empty if none is ready)."""
    ready = [a for a in groups.members(registry.all(), group) if a.state(now) == READY]
    if not ready:
        return []
    ids = [a.id for a in ready]
    pool = capacity.load(registry.redis, registry.prefix, ids, now, default_seconds=DEFAULT_TURN_SECONDS)
    streams = []
    for account in ready:
        concurrent, per_minute = account.limits(max_concurrent, rpm)
        rate = _rate_times(pool.starts[account.id], max(1, per_minute), now)
        free = _free_times(pool.in_flight[account.id], max(1, concurrent), pool.turn_seconds, now)
        streams.append(max(pair) for pair in zip(rate, free, strict=False))
    return list(itertools.islice(heapq.merge(*streams), count))


def _rate_times(recent: list[float], rpm: int, now: float) -> Iterator[float]:
    """When one account's sliding minute of `rpm` starts lets its next turns start."""
    recent = sorted(recent)[-rpm:]
    later = [start + capacity.WINDOW_SECONDS for start in recent]
    for cycle in itertools.count():  # lazily: `rpm` may be huge (tests, generous accounts)
        shift = cycle * capacity.WINDOW_SECONDS
        for _ in range(rpm - len(recent)):
            yield now + shift
        for start in later:
            yield max(now, start) + shift


def _free_times(held: list[float], concurrent: int, duration: float, now: float) -> Iterator[float]:
    """When one account's concurrency slots free up, each turn holding one for `duration`."""
    base = sorted([now] * max(0, concurrent - len(held)) + [max(now, s + duration) for s in held])
    base = base[:concurrent]
    for cycle in itertools.count():
        for free in base:
            yield free + cycle * duration
