"""The door's decision in one round trip: the Lua script that admits, promises or refuses.

`admission.admit` and `admission.expected_wait` ask `decide`; the script reads the
pool's load, builds the calendar of start times itself (as `admission.slots`, the
Python reference, does), fills it with the claims already made (pending turns and
promises, per owner) and, when writing, records the new claim, so every web process
agrees. The constants below are its parameters, each documented where it is set.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from service.accounts import groups
from service.accounts.account import READY
from service.accounts.registry import Registry

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
-- The calendar (`slots` in Python, the reference): per ready account (ARGV[15..] in triples: id,
-- max concurrent, rpm) a rate stream and a concurrency stream from its rate set, its held leases
-- and the median recent turn; their pairwise max; merged, the `count` earliest start times.
local function calendar(count)
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
  return cal, spacing
end
-- Only the places asked for: the first n start times of the merge need only the first n of each
-- account's streams, so a short line costs a short calendar (past SLOTS it extrapolates).
local cal, spacing = calendar(math.min(count, math.max(bound, queued)))
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


def decide(
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
    args = arguments(
        registry, owner, max_concurrent, rpm, max_wait=max_wait, now=now, write=write, group=group
    )
    if args is None:
        return None
    return verdict(registry.redis.register_script(DOOR)(args=args), now)


def arguments(
    registry: Registry,
    owner: str,
    max_concurrent: int,
    rpm: int,
    *,
    max_wait: float,
    now: float,
    write: bool,
    group: str = groups.DEFAULT_GROUP,
) -> list[str | float | int] | None:
    """The DOOR script's ARGV (it takes no KEYS), from the pool's snapshot; None if no account is
    ready. `service.state.gated` runs the script with the key's quota and the enqueue."""
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
    return args


def verdict(reply: list[Any], now: float) -> tuple[bool, float, float]:
    """The script's reply read: (admitted, expected wait, promised time or place)."""
    admitted, wait, value = reply
    return bool(admitted), max(0.0, float(wait)), float(value) if value != b"promise" else now
