"""Watching one completion's relay events until it ends, so a client never waits forever.

The web process only learns about a turn through the relay. If no worker takes the
job, or the worker running it dies, no terminal event will ever come; `watch` notices
both from Redis alone and synthesizes the terminal error the client should get:

- the worker's liveness lease (`service.turns.lease_key`) never appeared within
  `QUEUE_WAIT_TIMEOUT` → 503: no worker picked the request up;
- the lease appeared and then expired with no terminal event in the replay log →
  502 `worker_lost`;
- Redis itself is unreachable → 503 `service_unavailable` with a Retry-After, at
  once: the worker cannot publish either, so waiting would only turn into a hang;
- the web process is stopping (gunicorn got SIGTERM) and its drain deadline, set by
  `drain_on_sigterm` just short of gunicorn's `graceful_timeout`, has passed → 503
  `service_unavailable`: the stream ends visibly instead of being cut by the kill.

Synthesized errors are `Failed(..., synthetic=True)`: the job may still be queued or
running, so the caller should cancel it. Relay objects are decoded here, once, into
`service.events` classes: nothing past `watch` sees a dict event. `watch` also yields `None` after every
`SSE_HEARTBEAT_SECONDS` of silence, so a streaming caller can send a keep-alive
comment without a timer of its own.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from service.errors import ApiError, ServiceUnavailable
from service.events import Delta, Done, Failed, RelayEvent, decode
from service.runtime.settings import Settings
from service.state.relay_subscription import Subscription
from service.turns import lease_key
from service.web.http.errors import redis_unavailable

log = logging.getLogger(__name__)

SLICE_SECONDS = 1.0  # longest single wait on the subscription; bounds how late we notice a dead worker
DRAIN_MARGIN_SECONDS = 3.0  # streams end this long before gunicorn's graceful_timeout kills them


def no_worker_event(waited: float) -> Failed:
    """The terminal error for a job that no worker picked up in time."""
    error = ServiceUnavailable(
        f"No worker picked up this request within {waited:g} s; is a worker process running?",
        should_retry=True,
    )
    return Failed(error.to_event(), synthetic=True)


def worker_lost_event() -> Failed:
    """The terminal error for a turn whose worker stopped without finishing it."""
    error = ApiError(
        "The worker running this request stopped before finishing; please retry.",
        status=502,
        code="worker_lost",
        should_retry=True,
    )
    return Failed(error.to_event(), synthetic=True)


def redis_down_event() -> Failed:
    """The terminal error for a completion whose events can no longer be read from Redis."""
    return Failed(redis_unavailable().to_event(), synthetic=True)


def shutting_down_event() -> Failed:
    """The terminal error for a response still open when its web process must stop."""
    error = ServiceUnavailable(
        "The gateway is restarting and ended this response; please retry.", should_retry=True, retry_after=1
    )
    return Failed(error.to_event(), synthetic=True)


def drain_on_sigterm(app: Flask, graceful_timeout: float) -> None:
    """Chain a SIGTERM handler that lets responses in flight finish for most of `graceful_timeout`.

    Installed from gunicorn's `post_worker_init` hook (after gunicorn's own handlers):
    gunicorn stops accepting and waits up to `graceful_timeout` for open responses,
    then kills them mid-stream; ending them ourselves a little earlier turns that into
    an SSE error event and `[DONE]` (and frees the turn's claim and job).
    """
    hub = app.extensions["gateway"].hub
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        hub.drain(graceful_timeout - DRAIN_MARGIN_SECONDS)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def watch(
    sub: Subscription,
    redis: Redis,
    completion_id: str,
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
    *,
    hold: float | None = None,
) -> Iterator[RelayEvent | None]:
    """Yield the completion's events in order through the terminal one; `None` on silence.

    `None` comes after `settings.sse_heartbeat_seconds` without anything yielded. With
    `hold`, the first `None` comes after `hold` seconds instead: a streaming view uses
    it to wait a bounded time for the first event before committing to a 200.
    """
    started = clock()
    last_yield = started
    quiet_limit = settings.sse_heartbeat_seconds if hold is None else hold
    picked_up = False
    while True:
        if sub.draining_over:
            log.warning("event=response_ended_by_shutdown completion_id=%s", completion_id)
            yield shutting_down_event()
            return
        now = clock()
        wait = min(SLICE_SECONDS, quiet_limit - (now - last_yield))
        if not picked_up:
            wait = min(wait, settings.queue_wait_timeout - (now - started))
        try:
            event = sub.next(timeout=max(0.01, wait))  # may read the replay log to fill a gap
        except RedisError as exc:
            log.warning("event=relay_redis_unreachable completion_id=%s error=%r", completion_id, exc)
            yield redis_down_event()
            return
        if event is None:
            # Read the lease before the log: a worker logs its terminal event before
            # dropping the lease, so "lease gone and nothing new in the log" really
            # means the worker is gone. The log also fills any pub/sub gap.
            try:
                alive = bool(redis.exists(lease_key(completion_id)))
                if sub.catch_up():
                    continue  # the backlog is returned by the next `sub.next` at once
            except RedisError as exc:
                log.warning("event=relay_redis_unreachable completion_id=%s error=%r", completion_id, exc)
                yield redis_down_event()
                return
            picked_up = picked_up or alive
            if picked_up and not alive:
                log.warning("event=worker_lost completion_id=%s", completion_id)
                yield worker_lost_event()
                return
            waited = clock() - started
            if not picked_up and waited >= settings.queue_wait_timeout:
                log.warning("event=no_worker completion_id=%s waited=%.1f", completion_id, waited)
                yield no_worker_event(settings.queue_wait_timeout)
                return
            if clock() - last_yield >= quiet_limit:
                quiet_limit = settings.sse_heartbeat_seconds
                last_yield = clock()
                yield None
            continue
        picked_up = True
        last_yield = clock()
        relayed = _decoded(event)
        yield relayed
        if isinstance(relayed, Done | Failed):
            return


def _decoded(event: dict[str, Any]) -> RelayEvent:
    """A relay object as its event class; text, nearly every event, built without `decode`'s generic path."""
    if event.get("type") == "delta":
        return Delta(event["text"])
    return decode(event)
