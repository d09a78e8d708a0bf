"""Per-key limits and usage, enforced in Redis so every web process on every host agrees.

One Lua script admits a turn atomically (Redis runs scripts one at a time, so two web
processes can never both take the last slot), reading the clock from Redis `TIME` so
hosts with skewed clocks still share one window:

    ratelimit:<id>:requests  sorted set, one member per admitted turn, scored by its time:
                             a sliding 60-second window (requests per minute)
    ratelimit:<id>:turns     sorted set of turns in flight, scored by their lease's expiry:
                             a web process that dies holding a turn frees it at expiry
    usage:<id>:<day>         hash per key and UTC day (days since the epoch):
                             requests, rejected, errors, input_tokens, output_tokens

In order: an exhausted daily token quota (checked against tokens already used today,
so the turn that crosses the quota finishes) → `insufficient_quota`; a full minute →
`rate_limit_exceeded`, retry exactly when the oldest request in the window leaves it;
all turn slots taken → `rate_limit_exceeded`, retry after 1 s (a slot frees when any
turn ends, which cannot be known in advance). `settle` frees the slot and adds the
turn's tokens and error count. Not for Redis Cluster (the usage key is built in the
script), like the rest of the gateway's single-Redis design.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.access.key_limits import Limits
from service.access.key_usage import USAGE_TTL, usage_prefix
from service.access.keys import LAST_USED
from service.accounts.groups import DEFAULT_GROUP
from service.errors import ApiError, RateLimited

OK, QUOTA, RPM, CONCURRENT = 0, 1, 2, 3
DAY_MS = 86_400_000

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, conc, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local day = math.floor(now / 86400000)
local usage = ARGV[6] .. day
local day_reset = (day + 1) * 86400000 - now
local used, count, reset, busy = 0, 0, 0, 0
if tpd > 0 then
  local u = redis.call('HMGET', usage, 'input_tokens', 'output_tokens')
  used = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0)
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  count = redis.call('ZCARD', KEYS[1])
  if count > 0 then
    reset = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + 60000 - now
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  busy = redis.call('ZCARD', KEYS[2])
end
local status, retry = 0, 0
if tpd > 0 and used >= tpd then status, retry = 1, day_reset
elseif rpm > 0 and count >= rpm then status, retry = 2, reset
elseif conc > 0 and busy >= conc then status, retry = 3, 1000 end
if status ~= 0 then
  redis.call('HINCRBY', usage, 'rejected', 1)
  redis.call('EXPIRE', usage, ARGV[7])
  return {status, retry, count, reset, used, day_reset, busy}
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  -- A request that costs several upstream turns takes one entry of the minute per turn.
  for i = 2, tonumber(ARGV[9] or '1') do redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i) end
  redis.call('PEXPIRE', KEYS[1], 60000)
  if count == 0 then reset = 60000 end
  count = redis.call('ZCARD', KEYS[1])
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
  busy = busy + 1
end
redis.call('HINCRBY', usage, 'requests', 1)
redis.call('EXPIRE', usage, ARGV[7])
redis.call('HSET', KEYS[3], ARGV[8], t[1])
return {0, 0, count, reset, used, day_reset, busy}
"""

PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now / 86400000)
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - 60000), '+inf')
local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - 60000), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local reset = 0
if first[2] then reset = tonumber(first[2]) + 60000 - now end
local u = redis.call('HMGET', ARGV[1] .. day, 'input_tokens', 'output_tokens')
return {count, reset, (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0), (day + 1) * 86400000 - now}
"""


SETTLE = """
local t = redis.call('TIME')
local usage = ARGV[2] .. math.floor(tonumber(t[1]) / 86400)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HINCRBY', usage, 'input_tokens', ARGV[3])
redis.call('HINCRBY', usage, 'output_tokens', ARGV[4])
redis.call('HINCRBY', usage, 'errors', ARGV[5])
redis.call('EXPIRE', usage, ARGV[6])
return 1
"""


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (`key_…` managed, `static_…` from API_KEYS), owner tag, limits."""

    id: str
    owner: str
    limits: Limits
    group: str = DEFAULT_GROUP  # the account group its turns run on (service.accounts.groups)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the admission script said, enough for the response headers and the 429."""

    status: int
    retry_ms: int
    limits: Limits
    requests_used: int
    requests_reset_ms: int
    tokens_used: int
    tokens_reset_ms: int
    busy: int
    lease: str

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the limits the key has (none for an unlimited one).

        The tokens variants describe the daily token quota (reset at 00:00 UTC); reset-requests
        is when the oldest request in the minute leaves the window (one more becomes available).
        """
        out: dict[str, str] = {}
        rpm, tpd = self.limits.rpm or 0, self.limits.tokens_per_day or 0
        if rpm > 0:
            out["x-ratelimit-limit-requests"] = str(rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, rpm - self.requests_used))
            out["x-ratelimit-reset-requests"] = duration(self.requests_reset_ms)
        if tpd > 0:
            out["x-ratelimit-limit-tokens"] = str(tpd)
            out["x-ratelimit-remaining-tokens"] = str(max(0, tpd - self.tokens_used))
            out["x-ratelimit-reset-tokens"] = duration(self.tokens_reset_ms)
        return out

    def error(self, caller: Caller) -> ApiError | None:
        """The 429 for a refused turn (None when admitted)."""
        if self.status == OK:
            return None
        if self.status == QUOTA:
            return ApiError(
                f"You exceeded your current quota: this key ({caller.id}) may use "
                f"{self.limits.tokens_per_day} tokens per day and has used {self.tokens_used}; "
                f"the quota resets in {duration(self.tokens_reset_ms)} (00:00 UTC).",
                status=429,
                error_type="insufficient_quota",
                code="insufficient_quota",
                should_retry=False,
            )
        wait = self.retry_ms / 1000
        if self.status == RPM:
            what = f"requests per min (RPM): Limit {self.limits.rpm}, Used {self.requests_used}, Requested 1"
        else:
            what = f"concurrent turns: Limit {self.limits.max_concurrent}, In flight {self.busy}, Requested 1"
        return RateLimited(
            f"Rate limit reached for key {caller.id} on {what}. "
            f"Please try again in {duration(self.retry_ms)}.",
            retry_after=wait,
        )


def duration(ms: int) -> str:
    """A duration as OpenAI writes reset times: `20ms`, `1.5s`, `6m0s`, `3h2m1s`."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def _requests_key(key_id: str) -> str:
    return f"ratelimit:{key_id}:requests"


def turns_key(key_id: str) -> str:
    """The sorted set of a key's turns in flight (member = lease, score = lease expiry in ms)."""
    return f"ratelimit:{key_id}:turns"


def admit(redis: Redis, caller: Caller, *, lease_seconds: float, turns: int = 1) -> Decision:
    """Count one request against the caller's limits, atomically; take a turn slot if admitted.

    The slot is a lease of `lease_seconds` (the longest a turn can live): if the web
    process holding it dies, it frees itself then. A request that will cost several
    upstream `turns` (priming, repair) takes that many entries of the key's minute
    (rpm); it is admitted while the minute has room for one more request. Raises
    nothing; see `Decision.error`.
    """
    with redis.pipeline(transaction=False) as pipe:
        decide = admit_in(pipe, caller, lease_seconds=lease_seconds, turns=turns)
        return decide(pipe.execute()[0])


def admit_in(
    pipe: Pipeline, caller: Caller, *, lease_seconds: float, turns: int = 1
) -> Callable[[Any], Decision]:
    """`admit` as one command of the caller's pipeline (other reads share its round trip);
    the returned function reads its reply."""
    keys, args, decide = admit_call(caller, lease_seconds=lease_seconds, turns=turns)
    pipe.eval(ADMIT, len(keys), *keys, *args)
    return decide


def admit_call(
    caller: Caller, *, lease_seconds: float, turns: int = 1
) -> tuple[list[str], list[str | int], Callable[[Any], Decision]]:
    """The ADMIT script's keys and args for one turn, and the function that reads its reply
    (`admit_in`, or `service.state.gated` running it with the door and the enqueue)."""
    limits = caller.limits
    lease = uuid.uuid4().hex
    keys = [_requests_key(caller.id), turns_key(caller.id), LAST_USED]
    args: list[str | int] = [
        limits.rpm or 0,
        limits.max_concurrent or 0,
        limits.tokens_per_day or 0,
        lease,
        int(lease_seconds * 1000),
        usage_prefix(caller.id),
        USAGE_TTL,
        caller.id,
        max(1, turns),
    ]

    def decide(result: Any) -> Decision:
        status, retry, count, reset, used, day_reset, busy = (int(v) for v in result)
        return Decision(status, retry, limits, count, reset, used, day_reset, busy, lease)

    return keys, args, decide


def peek(redis: Redis, caller: Caller) -> Decision:
    """The caller's standing without counting a request: for the headers of other endpoints."""
    count, reset, used, day_reset = (
        int(v) for v in redis.eval(PEEK, 1, _requests_key(caller.id), usage_prefix(caller.id))
    )
    return Decision(OK, 0, caller.limits, count, reset, used, day_reset, 0, "")


def settle(
    redis: Redis, caller: Caller, lease: str, *, input_tokens: int, output_tokens: int, error: bool
) -> None:
    """Free the turn's slot and add its tokens (and an error, if it failed) to today's usage."""
    redis.eval(
        SETTLE,
        1,
        turns_key(caller.id),
        lease,
        usage_prefix(caller.id),
        max(0, input_tokens),
        max(0, output_tokens),
        1 if error else 0,
        USAGE_TTL,
    )
