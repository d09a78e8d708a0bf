"""One request's reader of one completion's relayed events (`RelayHub.subscribe` makes it).

Apart from the hub because it is what a request holds: it orders events by sequence number,
drops duplicates and fills a gap from the replay log (`service.state.relay`), while the hub
owns the shared pub/sub connection and its listener.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from service.events import TERMINAL
from service.state.relay import channel_name, read_log

if TYPE_CHECKING:
    from service.state.relay_hub import RelayHub


UNTIMED_WAIT = 0.5
"""Waits at least this long ride the hub's ticks instead of a timer (overshoot ≤ its tick)."""


class Subscription:
    """One request's view of one completion's events, in sequence order."""

    def __init__(self, hub: RelayHub, completion_id: str) -> None:
        self.completion_id = completion_id
        self.channel = channel_name(completion_id)
        self._hub = hub
        # A deque and an event rather than a `queue.Queue`: one reader, one writer, and no
        # Condition and lock pair to allocate for every wait (its cost per delta showed up
        # in the web process's profile under gevent).
        self._inbox: deque[dict[str, Any]] = deque()
        self._arrived = threading.Event()
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
            event = self._get(remaining)
            if event is None:
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

    def deliver(self, event: dict[str, Any]) -> None:
        """Hand this subscription an event and wake its reader."""
        self._inbox.append(event)
        self._arrived.set()

    def push(self, event: dict[str, Any]) -> None:
        """Hand this subscription an event without waking its reader (the hub wakes it once per batch)."""
        self._inbox.append(event)

    def wake(self) -> None:
        """Wake the reader for what `push` handed over."""
        self._arrived.set()

    def ready(self) -> bool:
        """True if `next` has an event to return without waiting (a stream joins such frames into one write).

        Duplicates at the head of the inbox are dropped here, so a True never turns into a
        wait; a gap still costs `next` one read of the replay log, but never a wait.
        """
        if self._backlog:
            return True
        inbox = self._inbox
        while inbox and int(inbox[0].get("seq", -1)) < self._next_seq:
            inbox.popleft()
        return bool(inbox)

    def _get(self, timeout: float) -> dict[str, Any] | None:
        """The next delivered event, waiting up to `timeout` s for one; None if none came.

        Clear, look again, then wait: an event delivered between the look and the wait
        has set the flag after the clear, so the wait returns at once.
        """
        if not self._inbox:
            self._arrived.clear()
            if not self._inbox and not self._wait(timeout):
                return None
        return self._inbox.popleft() if self._inbox else None

    def _wait(self, timeout: float) -> bool:
        """Wait until an event is delivered or `timeout` passes; True if one was.

        A long wait under gevent takes no timer of its own (one per relayed delta,
        otherwise): while the hub's listener ticks, it wakes every subscription every
        `TICK_SECONDS`, and a wake with nothing delivered just waits again. Checking
        `ticking` and waiting run with no greenlet switch between them, so a listener
        that stops ticking (and wakes everyone as it does) is not missed; a wake with
        nothing delivered is cleared and the inbox looked at again before the next wait.
        """
        hub = self._hub
        deadline = time.monotonic() + timeout
        remaining = timeout
        while True:
            if remaining >= UNTIMED_WAIT and hub.ticking:
                self._arrived.wait()
            elif not self._arrived.wait(remaining):
                return bool(self._inbox)
            if self._inbox:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._arrived.clear()
            if self._inbox:
                return True

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
