"""The relay hub's listener: the loop that reads the shared pub/sub connection and wakes readers.

Apart from `service.state.relay_hub` (subscribing, confirming, closing) because this is
the web tier's per-delta path, written for its CPU cost: replies are read a batch at a
time (`service.state.relay_reader`) and each reader is woken once per batch; readers
under gevent wait without a timer of their own, the loop wakes them all every
TICK_SECONDS instead (`Subscription._wait`). (Lingering between reads so one wake-up
serves more deltas was tried: at 500 paced streams the process is busy enough that
batches form anyway, and the linger only added latency.)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis.client import PubSub

from service.state.relay import decode_message
from service.state.relay_reader import is_message, next_batch
from service.state.relay_subscription import Subscription

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
"""How often the listener wakes every subscription (a reader's longest overshoot of a long wait)."""


def threads_are_greenlets() -> bool:
    """True when gevent has patched `threading` (the gevent web worker): an Event wait is a greenlet's."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a web-tier dependency
        return False
    return bool(monkey.is_module_patched("threading"))


class Listener:
    """The listener half of `RelayHub` (its state is the hub's, set in `RelayHub.__init__`)."""

    _subs: dict[str, list[Subscription]]
    _waiters: dict[str, list[threading.Event]]
    _closed: threading.Event
    _healthy: threading.Event
    _wake: threading.Event
    _home: str
    _untimed: bool
    _ticking: bool

    @property
    def ticking(self) -> bool:
        """True while the listener wakes every subscription each TICK_SECONDS (see `Subscription._get`)."""
        return self._ticking

    def _tick(self) -> None:
        """Wake every subscription, so a reader waiting without a timer looks at its deadline."""
        for readers in list(self._subs.values()):
            for sub in list(readers):
                sub.wake()

    def _listen(self, pubsub: PubSub, home: threading.Event) -> None:
        try:
            self._ticking = self._untimed
            self._listen_loop(pubsub, home)
        finally:
            self._ticking = False
            self._tick()  # a reader waiting on the ticks takes a timed wait from now on

    def _listen_loop(self, pubsub: PubSub, home: threading.Event) -> None:
        failures = 0
        next_tick = time.monotonic() + TICK_SECONDS
        while not self._closed.is_set():
            now = time.monotonic()
            if now >= next_tick and self._ticking:
                next_tick = now + TICK_SECONDS
                self._tick()
            try:
                batch = next_batch(pubsub, TICK_SECONDS)
                if failures:  # back after an outage (once: this loop runs per relayed batch)
                    failures = 0
                    self._healthy.set()
                    self._ticking = self._untimed
            except Exception as exc:
                self._healthy.clear()
                if self._ticking:  # no ticks while the listener backs off: readers use timers
                    self._ticking = False
                    self._tick()
                if self._closed.is_set():
                    return
                # One warning per outage; redis-py resubscribes every channel on reconnect,
                # and subscriptions fill any gap from the replay log.
                if failures == 0:
                    log.warning("event=relay_listener_error error=%r", exc)
                failures += 1
                self._wake.wait(min(2.0, 0.1 * 2**failures))  # a request (or close) cuts it short
                self._wake.clear()
                continue
            if batch:
                self._hand_over(pubsub, batch, home)

    def _hand_over(self, pubsub: PubSub, batch: list[Any], home: threading.Event) -> None:
        """A batch of replies to its readers; each reader is woken once, however many it got."""
        woken: dict[int, Subscription] = {}
        for reply in batch:
            if type(reply) is dict:
                self._dispatch(reply, home, woken)
            elif is_message(reply):
                self._relay(reply[1], reply[2], woken)
            else:
                handled = pubsub.handle_message(reply)  # type: ignore[no-untyped-call]  # redis-py
                if handled is not None:
                    self._dispatch(handled, home, woken)
        for sub in woken.values():
            sub.wake()

    def _dispatch(
        self, message: dict[str, Any], home: threading.Event, woken: dict[int, Subscription]
    ) -> None:
        """A parsed message (`get_message`, `handle_message`): a confirmation, a notification, an event."""
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        kind = message["type"]
        if channel == self._home:
            home.set()
            return
        if kind == "message":
            self._relay(channel, message["data"], woken)
        elif kind == "subscribe":
            for sub in self._subs.get(channel, ()):
                sub._confirmed.set()

    def _relay(self, channel: str | bytes, data: Any, woken: dict[int, Subscription]) -> None:
        """A relayed message to every reader of its channel (woken later, once per batch)."""
        name = channel.decode() if type(channel) is bytes else channel
        assert isinstance(name, str)
        readers = self._subs.get(name)
        if readers:
            event = decode_message(data)
            for sub in readers:
                sub.push(event)
                woken[id(sub)] = sub
        elif name in self._waiters:
            for waiter in list(self._waiters.get(name, ())):
                waiter.set()
