"""The worker's side of the relay: one completion's events, numbered, in order, onto Redis.

Every event gets a sequence number and goes, in one Redis pipeline, onto the
completion's pub/sub channel and its short-lived replay log (`service.state.relay`).
Text deltas are coalesced: the first one and any after a quiet spell go out at once, a
burst is merged for at most `coalesce_ms`, so Redis and the client see fewer, larger
messages without the first token ever waiting. Apart from the web side's hub so the
worker imports no subscriber machinery.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from service.events import TERMINAL, Delta, RelayEvent, Terminal
from service.state.relay import channel_name, log_key

log = logging.getLogger(__name__)


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
