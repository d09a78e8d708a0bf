"""The fair waiting line in front of the pool: the `ADMIT` script and its tickets.

`Scheduler.poll` runs `ADMIT` (see `service.accounts.scheduler` for its three steps);
this module owns the script, the tickets that stand in the line and how long a ticket
outlives its waiting worker.

Fairness across API keys is start-time fair queuing: a ticket's tag is
`max(virtual time, the owner's last tag) + 1`, the line is ordered by tag (then arrival),
and the virtual time advances to the tag of each ticket served. One key queuing a
hundred turns gets tags 1…100; another key's turn arriving later gets the tag after the
one being served, so keys take turns instead of first-come-first-served.

A ticket can be served out of line: the ones in front of it want only accounts that are
full, or (for up to a second after an operator's change) a worker's stale view of the
pool names an account that is gone. The virtual time then stops just short of the
earliest ticket still waiting; advancing it to the served ticket's tag would tag the next
newcomer behind everything that was waiting, which is first-come-first-served again.
"""

from __future__ import annotations

import random
import time

TICKET_SECONDS = 10.0
SCAN = 200  # how far down the line the script looks; a turn further back just waits

ADMIT = """
local prefix, now, ticket, owner, want = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ticket_ttl, lease_ttl, window, scan = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])
local line = prefix .. ':line'
local wants, alive, tags, vt_key = line .. ':want', line .. ':alive', line .. ':tags', line .. ':vt'
local tags_ttl = math.ceil(ticket_ttl * 360)  -- an idle pool forgets every owner's tag within an hour
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now)) do
  redis.call('ZREM', line, dead); redis.call('HDEL', wants, dead); redis.call('ZREM', alive, dead)
end
if not redis.call('ZSCORE', line, ticket) then
  local vt = tonumber(redis.call('GET', vt_key) or '0')
  local tag = math.max(vt, tonumber(redis.call('HGET', tags, owner) or '0')) + 1
  redis.call('HSET', tags, owner, tag)
  redis.call('EXPIRE', tags, tags_ttl)
  redis.call('ZADD', line, tag, ticket)
  -- An owner's tag at or behind the clock means what no tag means: forget a few such owners
  -- on every new ticket, so the hash holds only owners with turns ahead (one per caller, else).
  local vt_now = tonumber(redis.call('GET', vt_key) or '0')
  local scanned = redis.call('HSCAN', tags, redis.call('GET', tags .. ':cursor') or '0', 'COUNT', 20)
  for i = 1, #scanned[2], 2 do
    if tonumber(scanned[2][i + 1]) <= vt_now then redis.call('HDEL', tags, scanned[2][i]) end
  end
  redis.call('SET', tags .. ':cursor', scanned[1], 'EX', tags_ttl)
end
redis.call('ZADD', alive, now + ticket_ttl, ticket)
redis.call('HSET', wants, ticket, want)
local free, total = {}, 0
for i = 10, #ARGV, 3 do
  local id = ARGV[i]
  local leases, rate = prefix .. ':leases:' .. id, prefix .. ':rate:' .. id
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)
  local f = math.min(tonumber(ARGV[i + 1]) - redis.call('ZCARD', leases),
                     tonumber(ARGV[i + 2]) - redis.call('ZCARD', rate))
  -- The caller's view of the pool may be a second old: deleted, disabled, unwell = no slot.
  local h = redis.call('HMGET', prefix .. ':a:' .. id, 'enabled', 'attention', 'cooling_until')
  if h[1] ~= '1' or h[2] == '1' or tonumber(h[3] or '0') > now then f = 0 end
  if f < 0 then f = 0 end
  free[id] = f
  total = total + f
end
local rank = redis.call('ZRANK', line, ticket)
if total == 0 or rank >= scan then return {0, rank + 1} end
local function best(csv)
  local pick, most = nil, 0
  for id in string.gmatch(csv or '', '[^,]+') do
    local f = free[id]
    if f and f > most then pick, most = id, f end
  end
  return pick
end
local ahead = {}
if rank > 0 then ahead = redis.call('ZRANGE', line, 0, rank - 1) end
for _, other in ipairs(ahead) do
  local pick = best(redis.call('HGET', wants, other))
  if pick then free[pick] = free[pick] - 1 end
end
local pick = best(want)
if not pick then return {0, rank + 1} end
local lease_key, rate_key = prefix .. ':leases:' .. pick, prefix .. ':rate:' .. pick
redis.call('ZADD', lease_key, now + lease_ttl, ticket)
redis.call('ZADD', rate_key, now, ticket)
-- KEYS[1], if given, is the owner's door claim (`admission.started`): the turn took its slot.
if KEYS[1] and KEYS[1] ~= '' then redis.call('ZPOPMIN', KEYS[1]) end
-- KEYS[2], if given, prefixes the accounts' spare upstream conversations: the turn takes the one
-- of its account (workers/spare_conversations.py), so it needs no create before its `send`.
local spare = false
if KEYS[2] and KEYS[2] ~= '' then spare = redis.call('GETDEL', KEYS[2] .. pick) end
redis.call('EXPIRE', lease_key, math.ceil(lease_ttl + window))
redis.call('EXPIRE', rate_key, math.ceil(2 * window))
local tag = tonumber(redis.call('ZSCORE', line, ticket))
redis.call('ZREM', line, ticket); redis.call('HDEL', wants, ticket); redis.call('ZREM', alive, ticket)
-- Served out of line (the turns in front could not use this slot), the clock stops short of them.
local head = redis.call('ZRANGE', line, 0, 0, 'WITHSCORES')
if head[2] then tag = math.min(tag, tonumber(head[2]) - 1) end
local vt = math.max(tag, tonumber(redis.call('GET', vt_key) or '0'))
redis.call('SET', vt_key, vt)
if tonumber(redis.call('HGET', tags, owner) or '0') <= vt then redis.call('HDEL', tags, owner) end
-- The chosen account as it is now (its credentials): the turn needs no read of its own.
return {1, pick, redis.call('HGETALL', prefix .. ':a:' .. pick), spare}
"""


def new_ticket() -> str:
    """A unique ticket that sorts by arrival (ties in the line go to the earlier turn)."""
    return f"{time.time_ns():020d}.{random.getrandbits(40):010x}"
