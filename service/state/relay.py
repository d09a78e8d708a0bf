"""Carrying a turn's events from the worker to the web process that serves the client.

Worker side, `Publisher`: every event gets a sequence number and goes, in one Redis
pipeline, onto the completion's pub/sub channel and its short-lived replay log. Text
deltas are coalesced: the first one and any after a quiet spell go out at once, a burst
is merged for at most `coalesce_ms`, so Redis and the client see fewer, larger messages
without the first token ever waiting.

Web side, `RelayHub`: one shared pub/sub connection per process, read by one listener
thread (a greenlet under gevent), dispatching messages to per-request `Subscription`
queues; several readers of one completion (a background response's collector and its
stream, a resumed stream) share its channel and each get every message. A subscription
is confirmed by Redis before `subscribe()` returns, so a job enqueued afterwards cannot
publish into the void. Sequence numbers let a subscription
notice a lost message and fill the gap from the replay log; a late reader can read the
whole log.

Events are `service.events` dataclasses; on the wire each is its `to_json()` object
plus "seq". `Done` and `Failed` ("done", "error") are terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from redis.client import Pipeline, PubSub
from redis.exceptions import RedisError

from service.events import TERMINAL, Delta, RelayEvent, Terminal

log = logging.getLogger(__name__)


def channel_name(completion_id: str) -> str:
    """The pub/sub channel of one completion."""
    return f"relay:{completion_id}"


def log_key(completion_id: str) -> str:
    """The replay log (a Redis list, index == seq) of one completion."""
    return f"relay:{completion_id}:log"


class Publisher:
    """Publishes one completion's events in order, coalescing text deltas."""

    def __init__(
        self,
        redis: Redis,
        completion_id: str,
        *,
        coalesce_ms: float = 8.0,
        replay_ttl: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._channel = channel_name(completion_id)
        self._log = log_key(completion_id)
        self._window = coalesce_ms / 1000.0
        self._ttl = replay_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: list[str] = []
        self._last_sent = float("-inf")
        self._timer: threading.Timer | None = None
        self._broken: RedisError | None = None  # a timed flush failed; the next publish raises it
        self.closed = False

    def delta(self, text: str) -> None:
        """Queue answer text; sent now unless a message went out within the window."""
        if not text:
            return
        with self._lock:
            self._raise_if_broken()
            self._pending.append(text)
            wait = self._last_sent + self._window - self._clock()
            if wait <= 0:
                self._flush_locked(None)
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def event(self, event: RelayEvent) -> None:
        """Send an event: text is coalesced (`delta`), anything else goes now, after pending text."""
        if isinstance(event, Delta):
            self.delta(event.text)
            return
        with self._lock:
            self._raise_if_broken()
            self._flush_locked(event.to_json())

    def finish(self, event: Terminal, extra: Callable[[Pipeline], object] | None = None) -> None:
        """Send the terminal event; `extra` adds commands to the same MULTI (e.g. saving the turn)."""
        with self._lock:
            self._flush_locked(event.to_json(), extra=extra)
            self.closed = True

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending and not self.closed:
                try:
                    self._flush_locked(None)
                except RedisError as exc:
                    # No one to raise to on a timer thread: the turn's next publish raises it,
                    # so the turn fails instead of streaming on with a hole in its text.
                    log.warning("event=relay_publish_failed error=%s", exc.__class__.__name__)
                    self._broken = exc

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _flush_locked(
        self, event: dict[str, Any] | None, extra: Callable[[Pipeline], object] | None = None
    ) -> None:
        if self.closed:
            return
        messages: list[str] = []
        carried_text = bool(self._pending)
        if self._pending:
            messages.append(self._encode({"type": "delta", "text": "".join(self._pending)}))
            self._pending.clear()
        if event is not None:
            messages.append(self._encode(event))
        if not messages and extra is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        first = self._seq == len(messages)
        terminal = event is not None and event.get("type") in TERMINAL
        # Ordering needs no MULTI: one publisher per completion, under a lock. Only the
        # terminal event with `extra` (saving the turn) must be atomic with its publish.
        try:
            with self._redis.pipeline(transaction=extra is not None) as pipe:
                if extra is not None:
                    extra(pipe)
                for message in messages:
                    pipe.rpush(self._log, message)
                    pipe.publish(self._channel, message)
                if first or terminal:
                    pipe.expire(self._log, self._ttl)
                pipe.execute()
        except BaseException:
            # Nothing went out (`extra` refused the save, or Redis failed): the next event
            # (e.g. the error instead of `done`) reuses these numbers and carries the text.
            self._seq -= len(messages)
            if carried_text:
                self._pending.insert(0, json.loads(messages[0])["text"])
            raise
        if carried_text:
            # The window runs from the last *text* sent: a progress or limits event must
            # not hold back the first token behind it.
            self._last_sent = self._clock()

    def _encode(self, event: dict[str, Any]) -> str:
        payload = dict(event, seq=self._seq)
        self._seq += 1
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def read_log(redis: Redis, completion_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Events of a completion from `start` on, from its replay log."""
    return [json.loads(raw) for raw in redis.lrange(log_key(completion_id), start, -1)]


def last_event(redis: Redis, completion_id: str) -> dict[str, Any] | None:
    """The latest event in a completion's replay log, if any."""
    raw = redis.lindex(log_key(completion_id), -1)
    return json.loads(raw) if raw is not None else None


class Subscription:
    """One request's view of one completion's events, in sequence order."""

    def __init__(self, hub: RelayHub, completion_id: str) -> None:
        self.completion_id = completion_id
        self.channel = channel_name(completion_id)
        self._hub = hub
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._confirmed = threading.Event()
        self._next_seq = 0
        self._backlog: list[dict[str, Any]] = []
        self.finished = False

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None if none arrived within `timeout` seconds."""
        if self._backlog:
            return self._take(self._backlog.pop(0))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            seq = int(event.get("seq", -1))
            if seq < self._next_seq:
                continue  # a duplicate, already delivered from the log
            if seq > self._next_seq:
                self.catch_up()
                if self._backlog:
                    return self._take(self._backlog.pop(0))
                continue
            return self._take(event)

    @property
    def position(self) -> int:
        """The sequence number of the event `next` returned last (-1 before the first)."""
        return self._next_seq - 1

    def catch_up(self) -> bool:
        """Read events this subscription missed from the replay log; True if any."""
        missed = read_log(self._hub.redis, self.completion_id, self._next_seq + len(self._backlog))
        self._backlog.extend(missed)
        return bool(missed)

    def _take(self, event: dict[str, Any]) -> dict[str, Any]:
        self._next_seq = int(event["seq"]) + 1
        if event.get("type") in TERMINAL:
            self.finished = True
        return event

    @property
    def draining_over(self) -> bool:
        """The web process is stopping and this subscription's response must end now."""
        return self._hub.draining_over

    def close(self) -> None:
        """Stop receiving; safe to call twice."""
        self._hub.unsubscribe(self)


class RelayHub:
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
        self._home = f"relay:hub:{uuid.uuid4().hex}"
        self._drain_deadline: float | None = None

    def subscribe(self, completion_id: str, *, confirmed: bool = True) -> Subscription:
        """Subscribe and return once Redis has confirmed the subscription.

        `confirmed=False` returns as soon as the SUBSCRIBE is sent, so the caller's next
        round trip overlaps its confirmation; it must then call `confirm`, then
        `Subscription.catch_up` (an event published before the confirmation is in the log).
        """
        sub = Subscription(self, completion_id)
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
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2.0)
        if self._pubsub is not None:
            self._pubsub.close()

    def _ensure_listener(self) -> PubSub:
        """Start the listener unless it runs; return the shared pub/sub connection it reads."""
        if self._thread is not None and self._thread.is_alive():
            assert self._pubsub is not None  # set before the thread is started
            return self._pubsub
        if self._pubsub is not None:
            self._pubsub.close()
        # redis-py leaves `pubsub()` unannotated.
        pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        self._pubsub = pubsub
        home = threading.Event()
        pubsub.subscribe(self._home)  # raises while Redis is down; the next request retries
        self._thread = threading.Thread(
            target=self._listen, args=(pubsub, home), name="relay-hub", daemon=True
        )
        self._thread.start()
        home.wait(self._confirm_timeout)
        return pubsub

    def _listen(self, pubsub: PubSub, home: threading.Event) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
                failures = 0
            except Exception as exc:
                if self._closed.is_set():
                    return
                # One warning per outage; redis-py resubscribes every channel on reconnect,
                # and subscriptions fill any gap from the replay log.
                if failures == 0:
                    log.warning("event=relay_listener_error error=%r", exc)
                failures += 1
                self._closed.wait(min(2.0, 0.1 * 2**failures))
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            kind = message["type"]
            if channel == self._home:
                home.set()
                continue
            if kind == "message" and channel in self._waiters:
                for waiter in list(self._waiters.get(channel, ())):
                    waiter.set()
                continue
            readers = list(self._subs.get(channel, ()))
            if kind == "subscribe":
                for sub in readers:
                    sub._confirmed.set()
            elif kind == "message" and readers:
                event = json.loads(message["data"])
                for sub in readers:
                    sub._queue.put(event)
