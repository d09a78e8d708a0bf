"""One turn at a time per conversation, across every web and worker process.

Two requests on one conversation must never interleave upstream turns: the second
would be sent into an upstream conversation whose history differs from what its
client sees. The web tier takes the conversation's lock before it decides how to
continue (so it decides on the conversation's latest state), hands the token to the
job, and the worker refreshes it while the turn runs and releases it once the turn's
outcome is stored. A second request therefore waits — bounded, never a 409, which
the 0.28 SDK would retry forever — and then sees the first turn in the transcript.

The lock is a Redis key holding a random token with a short TTL, so a crashed holder
frees it by itself; release and refresh only act if the token still matches (the same
compare-and-act scripts as redis-py's `redis.lock.Lock`, kept here because release must
also announce itself and refresh shares the turn watcher's pipeline).

**Fencing.** A lock with a TTL can lapse under a stalled holder, and another turn may
then take it. The holder must not save after that: `fence` WATCHes the lock (and the
conversation, so a DELETE wins too) inside the saving transaction and checks the token,
so the save either happens while the token still holds the lock or not at all
(`LockLost` / `ConversationGone`).

**Waiting without polling.** `release` PUBLISHes on the conversation's channel
(`wake_channel`); a waiter listens there (in the web tier through the process's one
shared pub/sub connection) and retries the moment the lock is freed, with a slow
fallback poll because a lapsed TTL announces nothing and a message can be lost.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from redis import Redis
from redis.client import Pipeline

from service.errors import ApiError, NotFound
from service.state.conversations import conversation_key

FALLBACK_POLL = 1.0  # seconds between retries when no release message arrives

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], '1')
  return 1
end
return 0
"""
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""

_INSPECT = """
return {redis.call('get', KEYS[1]) or '', redis.call('exists', KEYS[2])}
"""

Waker = Callable[[str], AbstractContextManager[threading.Event]]
"""Subscribe to a channel for the duration of a `with`; the event is set on each message."""


class LockLost(ApiError):
    """The turn's conversation lock lapsed and may be someone else's: its outcome is not saved."""

    status = 503  # not 409: the 0.28 SDK retries a 409 forever
    error_type = "api_error"
    code = "conversation_lock_lost"

    def __init__(self) -> None:
        super().__init__(
            "This turn lost its hold on the conversation (it stalled past the lock's lifetime), so its "
            "answer was not saved and the transcript is unchanged; please retry.",
            should_retry=True,
            retry_after=1,
        )


class ConversationGone(NotFound):
    """The conversation was deleted while the turn ran: DELETE wins, nothing is re-saved."""

    code = "conversation_not_found"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"The conversation '{conversation_id}' was deleted while this turn ran.")


def lock_key(conversation_id: str) -> str:
    """The lock of one conversation."""
    return f"conv:{conversation_id}:lock"


def wake_channel(conversation_id: str) -> str:
    """Where a release of the conversation's lock is announced."""
    return f"conv:{conversation_id}:unlocked"


@contextlib.contextmanager
def _no_waker(channel: str) -> Iterator[threading.Event]:
    yield threading.Event()


def acquire(
    redis: Redis,
    conversation_id: str,
    *,
    ttl: float,
    wait: float,
    waker: Waker | None = None,
    poll: float = FALLBACK_POLL,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Take the lock, waiting up to `wait` seconds; returns its token, or None if still busy.

    A waiter subscribes (through `waker`) before its first attempt, so a release between
    a failed attempt and the wait is not missed; it then tries once per release message
    and at most every `poll` seconds otherwise.
    """
    token = secrets.token_hex(16)
    key = lock_key(conversation_id)
    if redis.set(key, token, nx=True, px=int(ttl * 1000)):
        return token
    if wait <= 0:
        return None
    deadline = clock() + wait
    with (waker or _no_waker)(wake_channel(conversation_id)) as released:
        while True:
            released.clear()
            if redis.set(key, token, nx=True, px=int(ttl * 1000)):
                return token
            remaining = deadline - clock()
            if remaining <= 0:
                return None
            released.wait(min(poll, remaining))


def refresh(redis: Redis | Pipeline, conversation_id: str, token: str, *, ttl: float) -> object:
    """Extend the lock if `token` still holds it (truthy then; in a pipeline, queued)."""
    return redis.eval(_REFRESH, 1, lock_key(conversation_id), token, int(ttl * 1000))


def release(redis: Redis, conversation_id: str, token: str) -> bool:
    """Free the lock if `token` still holds it (never someone else's) and wake its waiters."""
    return bool(redis.eval(_RELEASE, 1, lock_key(conversation_id), token, wake_channel(conversation_id)))


def fence(pipe: Pipeline, conversation_id: str, token: str, *, exists: bool) -> None:
    """Start `pipe`'s MULTI only if `token` holds the lock and the conversation is (still) there.

    Called on a transactional pipeline before any command is queued: it WATCHes the lock
    and the conversation, checks them, then switches the pipeline to MULTI. If either
    changes before EXEC, redis-py raises `WatchError` and nothing is written; the caller
    calls again, and this check then says why. `exists`: the conversation must exist (a
    continued one; a new conversation has no lock to hold and nothing to delete yet).
    """
    keys = (lock_key(conversation_id), conversation_key(conversation_id))
    pipe.watch(*keys)  # type: ignore[no-untyped-call]  # redis-py: unannotated
    holder, present = pipe.eval(_INSPECT, len(keys), *keys)  # one round trip for both
    if exists and not present:
        pipe.reset()
        raise ConversationGone(conversation_id)
    if token and (holder.decode() if isinstance(holder, bytes) else holder) != token:
        pipe.reset()
        raise LockLost()
    pipe.multi()
