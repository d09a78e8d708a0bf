"""The web side of the relay: one pub/sub connection per process, fanned out to subscriptions.

`RelayHub`: one shared pub/sub connection per process, read by one listener thread (a
greenlet under gevent), dispatching messages to per-request `Subscription` queues;
several readers of one completion (a background response's collector and its stream, a
resumed stream) share its channel and each get every message. A subscription is
confirmed by Redis before `subscribe()` returns, so a job enqueued afterwards cannot
publish into the void. Sequence numbers let a subscription notice a lost message and
fill the gap from the replay log (`service.state.relay`). Apart from the worker's
`Publisher` so each tier loads only its own side; a `Subscription` (one request's reader)
lives in `service.state.relay_subscription`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError
from redis.utils import DEFAULT_RESP_VERSION

from service.state.relay_listener import Listener, threads_are_greenlets
from service.state.relay_subscription import Subscription

log = logging.getLogger(__name__)


class RelayHub(Listener):
    """The web process's single pub/sub connection and its dispatcher."""

    def __init__(self, redis: Redis, *, confirm_timeout: float = 5.0) -> None:
        self.redis = redis
        self._confirm_timeout = confirm_timeout
        self._subs: dict[str, list[Subscription]] = {}  # several readers of one completion share it
        self._waiters: dict[str, list[threading.Event]] = {}
        self._lock = threading.Lock()
        self._pubsub: PubSub | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        # Set while the listener's connection works. While it is down the listener reconnects
        # it itself (redis-py reconnects inside get_message); a request must not reconnect the
        # same connection at the same time (two greenlets reading one socket), so it wakes the
        # listener from its backoff and waits for it (`_await_listener`).
        self._healthy = threading.Event()
        self._healthy.set()
        self._wake = threading.Event()
        self._home = f"relay:hub:{uuid.uuid4().hex}"
        self._drain_deadline: float | None = None
        # Under gevent a wait with a timeout costs a timer per relayed delta; readers wait
        # without one instead while the listener ticks (`ticking`), real threads keep timers.
        self._untimed = threads_are_greenlets()
        self._ticking = False

    def subscribe(self, completion_id: str, *, confirmed: bool = True) -> Subscription:
        """Subscribe and return once Redis has confirmed the subscription.

        `confirmed=False` returns as soon as the SUBSCRIBE is sent, so the caller's next
        round trip overlaps its confirmation; it must then call `confirm`, then
        `Subscription.catch_up` (an event published before the confirmation is in the log).
        """
        sub = Subscription(self, completion_id)
        self._await_listener()
        with self._lock:
            pubsub = self._ensure_listener()
            readers = self._subs.setdefault(sub.channel, [])
            readers.append(sub)
            # With a reader there already, the channel is subscribed (or its confirmation is coming).
            first = readers[0] if len(readers) > 1 else None
            if first is None:
                try:
                    pubsub.subscribe(sub.channel)
                except Exception:  # Redis unreachable: forget it, the caller answers 503
                    del self._subs[sub.channel]
                    raise
        if confirmed:
            self.confirm(sub)
        return sub

    def confirm(self, sub: Subscription) -> None:
        """Wait for Redis to confirm `sub`; TimeoutError (and no subscription) if it does not."""
        with self._lock:
            readers = self._subs.get(sub.channel, [])
            first = readers[0] if readers and readers[0] is not sub else None
        # A later reader of a subscribed channel is confirmed with the first one.
        if first is not None and first._confirmed.wait(self._confirm_timeout):
            sub._confirmed.set()
        if not sub._confirmed.wait(self._confirm_timeout):
            self.unsubscribe(sub)
            raise TimeoutError("Redis did not confirm the relay subscription")

    def drain(self, seconds: float) -> None:
        """The process is stopping: streams still open in `seconds` must end (see `draining_over`)."""
        self._drain_deadline = time.monotonic() + max(0.0, seconds)
        log.info("event=relay_draining open=%d seconds=%.1f", self.subscription_count, seconds)

    @property
    def draining_over(self) -> bool:
        """True once a drain's deadline has passed: subscribers should end their responses now."""
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription and tell Redis, once."""
        with self._lock:
            readers = self._subs.get(sub.channel, [])
            if sub not in readers:
                return
            readers.remove(sub)
            if readers:  # another reader still listens on the channel
                return
            del self._subs[sub.channel]
            pubsub = self._pubsub
            assert pubsub is not None  # a known subscription means the listener has started
            try:
                pubsub.unsubscribe(sub.channel)  # type: ignore[no-untyped-call]  # redis-py: unannotated
            except RedisError as exc:
                # redis-py resubscribes every channel it still lists when the listener
                # reconnects; drop this one so no dead channel outlives the outage.
                pubsub.channels.pop(sub.channel.encode(), None)
                log.warning("event=relay_unsubscribe_failed channel=%s error=%r", sub.channel, exc)

    @contextlib.contextmanager
    def notifications(self, channel: str) -> Iterator[threading.Event]:
        """While inside, the yielded event is set on every message published on `channel`.

        A generic subscription on the same shared connection (e.g. a lock's release
        channel, `service.state.locks`): several waiters in one process share one Redis
        subscription. Not confirmed before returning, so callers keep a fallback poll.
        """
        event = threading.Event()
        self._await_listener()
        with self._lock:
            pubsub = self._ensure_listener()
            waiters = self._waiters.setdefault(channel, [])
            waiters.append(event)
            if len(waiters) == 1:
                pubsub.subscribe(channel)
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._waiters.get(channel, [])
                waiters.remove(event)
                if not waiters:
                    del self._waiters[channel]
                    try:
                        assert self._pubsub is not None  # started by the subscribe above
                        self._pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]  # redis-py
                    except Exception:  # the listener reconnects and resubscribes what is left
                        log.warning("event=relay_unsubscribe_failed channel=%s", channel, exc_info=True)

    @property
    def subscription_count(self) -> int:
        """Open subscriptions (for metrics and tests)."""
        return sum(len(readers) for readers in self._subs.values())

    def close(self) -> None:
        """Stop the listener and release the pub/sub connection."""
        self._closed.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2.0)
        if self._pubsub is not None:
            self._pubsub.close()

    def _await_listener(self) -> None:
        """While the listener's connection is down, let the listener reconnect it (see __init__)."""
        if not self._healthy.is_set():
            self._wake.set()
            # Long enough for a reconnect to a Redis that is back (a few ms), short enough
            # that a request during an outage still gets its 503 promptly.
            self._healthy.wait(min(0.5, self._confirm_timeout))

    def _ensure_listener(self) -> PubSub:
        """Start the listener unless it runs; return the shared pub/sub connection it reads."""
        if self._thread is not None and self._thread.is_alive():
            assert self._pubsub is not None  # set before the thread is started
            return self._pubsub
        if self._pubsub is not None:
            self._pubsub.close()
        # redis-py leaves `pubsub()` unannotated.
        # redis-py's default handler of RESP3 pushes builds a debug line (`str()` of the
        # whole message) and looks its logger up for every message; RESP2 has no pushes.
        protocol = self.redis.connection_pool.connection_kwargs.get("protocol") or DEFAULT_RESP_VERSION
        resp3 = str(protocol) == "3"
        pubsub: PubSub = self.redis.pubsub(  # type: ignore[no-untyped-call]  # redis-py: unannotated
            ignore_subscribe_messages=False, push_handler_func=_as_is if resp3 else None
        )
        self._pubsub = pubsub
        home = threading.Event()
        pubsub.subscribe(self._home)  # raises while Redis is down; the next request retries
        self._thread = threading.Thread(
            target=self._listen, args=(pubsub, home), name="relay-hub", daemon=True
        )
        self._thread.start()
        home.wait(self._confirm_timeout)
        return pubsub


def _as_is(response: Any) -> Any:
    """A RESP3 pub/sub push, passed on to `get_message` untouched (see `_ensure_listener`)."""
    return response
