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
Lua script decides and writes, so web processes agree.
"""

from __future__ import annotations

import heapq
import itertools
import math
import uuid
from collections.abc import Iterator

from redis import Redis

from service.accounts import capacity, groups
from service.accounts.registry import READY, Registry
from service.errors import RateLimited

SLOTS = 600
"""How many future start times the script sees; later places extrapolate at their mean spacing."""
DEFAULT_TURN_SECONDS = 10.0
"""The turn duration assumed before any turn ended (for the concurrency limit)."""
PENDING_GRACE = 15.0
"""An admitted turn's claim lapses this long after the allowed wait (a web or worker crash)."""
PROMISE_GRACE = 10.0
"""A promise nobody claimed stops counting this long after its time."""
EARLY = 0.1
"""A client may come back this much early (clocks of web processes) and still find its promise."""
PROMISE_LEAD = 5.0
"""A promise is for this long before its slot (at most the allowed wait): time to reach a worker,
and the client waits at its end, not holding a connection in the line."""
MAX_PROMISES = 500
"""Per owner: a client ignoring Retry-After gets one but adds no more reservations past this."""

DOOR = """
local prefix, now, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local max_wait, pending_ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local id, write, max_promises, early = ARGV[7], ARGV[8] == '1', tonumber(ARGV[9]), tonumber(ARGV[10])
local lead, default_seconds, count = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local door = prefix .. ':door'
-- The calendar (`slots` in Python, the reference): per ready account (ARGV[15..] in triples: id,
-- max concurrent, rpm) a rate stream and a concurrency stream from its rate set, its held leases
-- and the median recent turn; their pairwise max; merged, the `count` earliest start times.
local recent_turns = redis.call('LRANGE', prefix .. ':durations', 0, -1)
for i, d in ipairs(recent_turns) do recent_turns[i] = tonumber(d) end
table.sort(recent_turns)
local turn = default_seconds
if #recent_turns > 0 then turn = recent_turns[math.floor(#recent_turns / 2) + 1] end
local cal = {}
for i = 15, #ARGV, 3 do
  local id = ARGV[i]
  local concurrent, per_minute = math.max(1, tonumber(ARGV[i + 1])), math.max(1, tonumber(ARGV[i + 2]))
  local rows = redis.call('ZRANGE', prefix .. ':rate:' .. id, 0, -1, 'WITHSCORES')
  local started, recent = {}, {}
  for j = 1, #rows, 2 do
    local at = tonumber(rows[j + 1])
    started[rows[j]] = at
    if at > now - 60 then recent[#recent + 1] = at end
  end
  local later = {}
  for j = math.max(1, #recent - per_minute + 1), #recent do later[#later + 1] = recent[j] + 60 end
  local rate, cycle = {}, 0
  while #rate < count do
    local shift = cycle * 60
    for _ = 1, math.min(per_minute - #later, count - #rate) do rate[#rate + 1] = now + shift end
    for _, at in ipairs(later) do
      if #rate >= count then break end
      rate[#rate + 1] = math.max(now, at) + shift
    end
    cycle = cycle + 1
  end
  local base = {}
  local held = redis.call('ZRANGEBYSCORE', prefix .. ':leases:' .. id, '(' .. ARGV[2], '+inf')
  for _ = 1, concurrent - #held do base[#base + 1] = now end
  for _, lease in ipairs(held) do base[#base + 1] = math.max(now, (started[lease] or now) + turn) end
  table.sort(base)
  local free = {}
  cycle = 0
  while #free < count do
    for j = 1, math.min(concurrent, #base) do
      if #free >= count then break end
      free[#free + 1] = base[j] + cycle * turn
    end
    cycle = cycle + 1
  end
  for j = 1, count do cal[#cal + 1] = math.max(rate[j], free[j]) end
end
table.sort(cal)
while #cal > count do table.remove(cal) end
local spacing = math.max((cal[#cal] - cal[1]) / math.max(#cal - 1, 1), 1e-3)
local owners = door .. ':owners'
local function pending(o) return door .. ':pending:' .. o end
local function promised(o) return door .. ':promised:' .. o end
local function keep(key, until_)
  local ttl = math.ceil(until_ - now) + 1
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
-- An owner's rounds: how far its fair-line tags run ahead of the virtual time (its turns in
-- the line, or turns it had before others caught up), or its admitted turns if more (some
-- not in the line yet), plus its promises.
local line = prefix .. ':line'
local vt = tonumber(redis.call('GET', line .. ':vt') or '0')
local function rounds(o, pend, prom)
  local ahead = tonumber(redis.call('HGET', line .. ':tags', o) or '0') - vt
  return math.max(ahead, pend, 0) + prom
end
local counts, claims = {}, {}
for _, o in ipairs(redis.call('ZRANGE', owners, 0, -1)) do
  if write then
    redis.call('ZREMRANGEBYSCORE', pending(o), '-inf', now)
    redis.call('ZREMRANGEBYSCORE', promised(o), '-inf', now - grace)
  end
  local pend = redis.call('ZCOUNT', pending(o), '(' .. now, '+inf')
  local prom = redis.call('ZCOUNT', promised(o), '(' .. (now - grace), '+inf')
  if pend + prom == 0 and write and o ~= owner then redis.call('ZREM', owners, o)
  else counts[o], claims[o] = rounds(o, pend, prom), pend + prom end
end
local function claim()
  redis.call('ZADD', pending(owner), now + pending_ttl, id)
  keep(pending(owner), now + pending_ttl)
  redis.call('ZADD', owners, now, owner)
end
-- The fair line serves owners round by round: this turn comes in round mine + 1, and by the
-- time it starts each other owner with a claim may have put a turn in each round ahead of it.
local mine = counts[owner] or rounds(owner, 0, 0)
local bound = 1 + mine
for o, _ in pairs(counts) do
  if o ~= owner and claims[o] > 0 then bound = bound + mine + 1 end
end
-- Turns in the fair line that did not come through this door count too.
local tag = math.max(vt, tonumber(redis.call('HGET', line .. ':tags', owner) or '0')) + 1
local queued = redis.call('ZCOUNT', line, '-inf', tag) + 1
local function slot(place)
  place = math.max(place, queued)
  if place <= #cal then return cal[place] end
  return cal[#cal] + (place - #cal) * spacing
end
local wait = slot(bound) - now
if wait <= max_wait then
  if write then claim() end
  return {1, tostring(wait), tostring(bound)}
end
if write then
  local due = redis.call('ZRANGEBYSCORE', promised(owner), now - grace, now + early, 'LIMIT', 0, 1)
  if #due > 0 then
    redis.call('ZREM', promised(owner), due[1])
    claim()
    return {1, '0', 'promise'}
  end
end
-- Refused: promised its place (as late as others may push it, so it waits at home, not in
-- the line), a little before the slot, a whole number of seconds from now (Retry-After).
local at = now + math.max(1, math.ceil(slot(bound) - lead - now))
if write and redis.call('ZCARD', promised(owner)) < max_promises then
  redis.call('ZADD', promised(owner), at, id)
  keep(promised(owner), at + grace)
  redis.call('ZADD', owners, now, owner)
  keep(owners, at + grace)
end
return {0, tostring(wait), tostring(at)}
"""


def expected_wait(
    registry: Registry, *, owner: str = "", max_concurrent: int, rpm: int, now: float
) -> float | None:
    """Seconds until a new turn of `owner` arriving now would start (read only); None when no
    account is ready (the worker answers that with the pool's own error)."""
    decision = _door(registry, owner, max_concurrent, rpm, max_wait=math.inf, now=now, write=False)
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
    accounts = registry.all()
    if accounts and not groups.members(accounts, group):
        raise groups.empty_group(group)
    decision = _door(
        registry, owner, max_concurrent, rpm, max_wait=max_wait, now=now, write=True, group=group
    )
    if decision is None or decision[0]:
        return
    _, wait, at = decision
    retry_after = max(1.0, math.ceil(at - now))
    raise RateLimited(
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


def _door(
    registry: Registry,
    owner: str,
    max_concurrent: int,
    rpm: int,
    *,
    max_wait: float,
    now: float,
    write: bool,
    group: str = groups.DEFAULT_GROUP,
) -> tuple[bool, float, float] | None:
    """(admitted, expected wait, promised time or place) from the script; None if no account is ready.

    The script reads the pool's load and builds the calendar itself (as `slots` does), so
    the door is one round trip.
    """
    ready = [a for a in groups.members(registry.all(), group) if a.state(now) == READY]
    if not ready:
        return None
    finite = max_wait if math.isfinite(max_wait) else 1e12
    args: list[str | float | int] = [
        registry.prefix,
        repr(now),
        owner,
        repr(finite),
        repr(finite + PENDING_GRACE),
        PROMISE_GRACE,
        uuid.uuid4().hex,
        1 if write else 0,
        MAX_PROMISES,
        EARLY,
        0,  # (was the calendar's spacing; the script works it out)
        repr(min(finite, PROMISE_LEAD)),
        DEFAULT_TURN_SECONDS,
        SLOTS,
    ]
    for account in ready:
        args.extend((account.id, *account.limits(max_concurrent, rpm)))
    admitted, wait, value = registry.redis.register_script(DOOR)(args=args)
    return bool(admitted), max(0.0, float(wait)), float(value) if value != b"promise" else now


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
