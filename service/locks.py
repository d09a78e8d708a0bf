"""One turn at a time per conversation, across every web and worker process.

Two requests on one conversation must never interleave upstream turns: the second
would be sent into an upstream conversation whose history differs from what its
client sees. The web tier takes the conversation's lock before it decides how to
continue (so it decides on the conversation's latest state), hands the token to the
job, and the worker refreshes it while the turn runs and releases it once the turn's
outcome is stored. A second request therefore waits — bounded, never a 409, which
the 0.28 SDK would retry forever — and then sees the first turn in the transcript.

The lock is a Redis key holding a random token with a short TTL, so a crashed holder
frees it by itself; release and refresh only act if the token still matches.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from redis import Redis
from redis.client import Pipeline

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


def lock_key(conversation_id: str) -> str:
    """The lock of one conversation."""
    return f"conv:{conversation_id}:lock"


def acquire(
    redis: Redis,
    conversation_id: str,
    *,
    ttl: float,
    wait: float,
    poll: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Take the lock, waiting up to `wait` seconds; returns its token, or None if still busy."""
    token = secrets.token_hex(16)
    deadline = clock() + wait
    while True:
        if redis.set(lock_key(conversation_id), token, nx=True, px=int(ttl * 1000)):
            return token
        if clock() >= deadline:
            return None
        sleep(poll)


def refresh(redis: Redis | Pipeline, conversation_id: str, token: str, *, ttl: float) -> object:
    """Extend the lock if `token` still holds it (truthy then; in a pipeline, queued)."""
    return redis.eval(_REFRESH, 1, lock_key(conversation_id), token, int(ttl * 1000))


def release(redis: Redis, conversation_id: str, token: str) -> bool:
    """Free the lock if `token` still holds it (never someone else's)."""
    return bool(redis.eval(_RELEASE, 1, lock_key(conversation_id), token))
