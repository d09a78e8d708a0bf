"""Reading the relay's shared pub/sub connection a batch at a time (the web tier's per-delta path).

redis-py's `PubSub.get_message` costs tens of microseconds per message: a retry wrapper, a
readiness `poll()` (two, with hiredis: one to wait, one to tell data from a closed peer,
each a new poll object under gevent) and a dict per message. Under hundreds of streams
that was the web process's largest single cost per delta. So the hub's listener
takes every reply already received — in hiredis's buffer, plus one non-blocking read of
the socket — straight from the parser, as raw `[b"message", channel, data]` replies.
When nothing is buffered it waits with one blocking read of the socket (`next_batch`),
and only falls back to `get_message` when that read fails.
Anything that is not a plain message (a subscribe confirmation, an unsubscribe) still goes
through `PubSub.handle_message`, so redis-py's own bookkeeping of its channels is unchanged.

Without hiredis (redis-py's pure-Python parser) there is no buffer to read from here:
`more_replies` returns nothing and the listener reads one message per `get_message`.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.client import PubSub
from redis.exceptions import RedisError

try:  # the sentinel redis-py's hiredis parser gives `hiredis.Reader` for "no whole reply yet"
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - an older redis-py: no batch reads, one message at a time
    NOT_ENOUGH_DATA = None

log = logging.getLogger(__name__)

MESSAGE = (b"message", "message")
BATCH_LIMIT = 1024  # replies per batch: a flood still lets the listener hand over what it has


def is_message(reply: Any) -> bool:
    """True for a raw pub/sub `message` reply: `[b"message", channel, data]` (RESP2 or a RESP3 push)."""
    return len(reply) == 3 and reply[0] in MESSAGE


def next_batch(pubsub: PubSub, timeout: float) -> list[Any]:
    """The next replies on `pubsub`'s connection, waiting up to `timeout` s for the first; [] if none came.

    Raw parser replies (see `is_message`), or one `get_message` dict when the batch path is
    unavailable or the connection failed: redis-py's `get_message` then reconnects and
    resubscribes, or raises for the listener's outage path.
    """
    replies = more_replies(pubsub, read=False)  # what the last read brought beyond its batch
    if replies:
        return replies
    parser: Any = getattr(pubsub.connection, "_parser", None)
    if getattr(parser, "_reader", None) is None or NOT_ENOUGH_DATA is None:
        message = pubsub.get_message(timeout=timeout)
        return [message] if message is not None else []
    try:
        # One blocking read: a single wait on the socket, where `get_message` polls twice.
        if not parser.read_from_socket(timeout=timeout, raise_on_timeout=False):
            return []
    except (RedisError, OSError):
        message = pubsub.get_message(timeout=timeout)
        return [message] if message is not None else []
    return more_replies(pubsub, read=False)  # that read took all the socket had (up to its buffer)


def more_replies(pubsub: PubSub, limit: int = BATCH_LIMIT, *, read: bool = True) -> list[Any]:
    """The replies `pubsub`'s connection has already received, without waiting for any.

    Raw parser replies, in order; with `read`, after one non-blocking socket read (a
    syscall that mostly finds nothing when deltas trickle in, so `next_batch` skips it
    right after its own blocking read). A read that fails
    (the peer closed, a reset) ends the batch quietly: the listener's next `get_message`
    meets the same broken socket and runs redis-py's reconnect, and every subscription
    fills the gap from the replay log by its sequence numbers.
    """
    connection = pubsub.connection
    parser: Any = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or NOT_ENOUGH_DATA is None or not hasattr(parser, "read_from_socket"):
        return []
    replies: list[Any] = []
    socket_read = not read
    while len(replies) < limit:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            if socket_read:
                break
            socket_read = True
            try:
                if not parser.read_from_socket(timeout=0, raise_on_timeout=False):
                    break
            except (RedisError, OSError) as exc:
                log.debug("event=relay_batch_read_failed error=%r", exc)
                break
            continue
        if isinstance(reply, Exception):
            raise reply  # an error reply: the listener treats it as an outage, as get_message would
        replies.append(reply)
    return replies
