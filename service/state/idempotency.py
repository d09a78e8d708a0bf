"""`Idempotency-Key`: a retried request never sends the same user message upstream twice.

The official SDKs retry 408/429/5xx and timeouts. A request carrying an
`Idempotency-Key` claims the key (per API key) for its completion; a retry with the
same key and the same body attaches to that completion instead of starting another
turn — it follows the running turn, or replays the finished one from the relay's
replay log, which lives as long as the claim (`REPLAY_TTL`). The same key with a
different body is a 400, as with OpenAI and Stripe. A turn that ended in an error
releases its claim, so a retry after a 429 or 502 really runs again; so does a request
that fails before its turn starts (404, 429 busy, Redis or enqueue errors). A retry that
arrives while the first request is still resolving waits on `claim_channel`, where
`record` and `release` announce the claim's change, instead of polling it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from redis import Redis

_RELEASE = """
local raw = redis.call('get', KEYS[1])
if raw and cjson.decode(raw)['completion_id'] == ARGV[1] then
  redis.call('publish', ARGV[2], '1')
  return redis.call('del', KEYS[1])
end
return 0
"""


def claim_key(owner: str, key: str) -> str:
    """Where an idempotency key's claim lives (the key itself is hashed)."""
    return f"idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def claim_channel(owner: str, key: str) -> str:
    """Where a change of the claim (conversation recorded, or released) is announced to retries."""
    return claim_key(owner, key) + ":changed"


def body_digest(raw: bytes) -> str:
    """A digest of the raw request body: a retry re-sends exactly the same bytes."""
    return hashlib.sha256(raw).hexdigest()


@dataclasses.dataclass(frozen=True)
class Claim:
    """The completion an idempotency key belongs to."""

    completion_id: str
    body: str
    conversation_id: str = ""
    created: int = 0

    def to_json(self) -> str:
        """Stored form."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Claim:
        """Inverse of `to_json`."""
        return cls(**json.loads(raw))


def claim(redis: Redis, owner: str, key: str, mine: Claim, *, ttl: int) -> Claim | None:
    """Claim `key` for `mine`; returns None if claimed now, else the earlier claim."""
    redis_key = claim_key(owner, key)
    for _ in range(3):
        if redis.set(redis_key, mine.to_json(), nx=True, ex=ttl):
            return None
        raw = redis.get(redis_key)
        if raw is not None:
            return Claim(**json.loads(raw))
    return None  # released and re-claimed three times in a row: go ahead as a fresh request


def lookup(redis: Redis, owner: str, key: str) -> Claim | None:
    """The current claim of `key`, if any."""
    raw = redis.get(claim_key(owner, key))
    return Claim(**json.loads(raw)) if raw is not None else None


def record(redis: Redis, owner: str, key: str, mine: Claim) -> None:
    """Update our claim once the conversation is known (keeps its expiry); wakes waiting retries."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(claim_key(owner, key), mine.to_json(), xx=True, keepttl=True)
        pipe.publish(claim_channel(owner, key), "1")
        pipe.execute()


def release(redis: Redis, owner: str, key: str, completion_id: str) -> None:
    """Drop the claim if it is still `completion_id`'s, so a retry runs afresh (at once: it is told)."""
    redis.eval(_RELEASE, 1, claim_key(owner, key), completion_id, claim_channel(owner, key))
