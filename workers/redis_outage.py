"""RQ's worker made to outlast Redis outages instead of exiting on the first one.

RQ's own loop quits on an unreachable Redis, and its heartbeat alone cannot tell that a
Redis restarted without its data has forgotten the worker. `OutageTolerantWorker` notes
an outage once (one warning when it starts, one when it ends), skips the maintenance and
suspension checks while it lasts, waits for a Redis that is not up yet at start, and
registers the worker again when a returning Redis forgot it. `GeventWorker` builds its
dequeue loop's backoff on it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.utils import now
from rq.worker import SimpleWorker

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
SUSPENSION_CHECK_EVERY = 1.0
"""`rq suspend` is noticed within this; RQ asks Redis before every dequeue, beside each turn's path."""
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class OutageTolerantWorker(SimpleWorker):
    """RQ's SimpleWorker that waits out Redis outages rather than exiting on them."""

    # RQ's reconnect backoff (1 s, doubling), capped low: a worker that waits a minute
    # after Redis returned would make every turn in that minute a 503.
    max_connection_wait_time = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._redis_down_since: float | None = None
        self._suspension_checked = float("-inf")  # monotonic time of the last `rq suspend` check
        if kwargs.get("connection") is not None:
            self._await_redis(kwargs["connection"])  # RQ's constructor already talks to Redis
        super().__init__(*args, **kwargs)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            gevent.sleep(min(0.2, deadline - time.monotonic()))

    def _redis_failed(self, exc: BaseException) -> None:
        """Note an outage: one warning when it starts, not one per retry."""
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning("event=worker_redis_unreachable error=%s retrying=backoff", exc.__class__.__name__)

    def _redis_back(self) -> None:
        if self._redis_down_since is None:
            return
        down_for = time.monotonic() - self._redis_down_since
        self._redis_down_since = None
        log.warning("event=worker_redis_reachable down_seconds=%.1f", down_for)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check at most once every SUSPENSION_CHECK_EVERY (RQ's loop asks before every
        dequeue: a round trip and its CPU in the process while the turn just started is on its
        way to its first token); unreachable Redis is left to the dequeue loop's backoff."""
        checked = time.monotonic()
        if checked - self._suspension_checked < SUSPENSION_CHECK_EVERY:
            return
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self._redis_failed(exc)
            return
        self._suspension_checked = checked

    def run_maintenance_tasks(self) -> None:
        """RQ's registry clean-up; skipped (retried next time) while Redis is unreachable."""
        try:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # rq: unannotated
        except REDIS_DOWN as exc:
            self._redis_failed(exc)

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """RQ's command listener retries on ConnectionError; also on timeouts, and quietly."""
        if isinstance(exc, REDIS_DOWN):
            self._redis_failed(exc)
            time.sleep(2.0)
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, at most once a second from the loop (its TTL is minutes).

        The loop's own heartbeat also checks that the worker is still registered: a
        Redis restarted without its data has forgotten every worker, and RQ's heartbeat
        alone would leave a half hash that `Worker.all()` never lists.
        """
        if pipeline is not None or timeout is not None:
            super().heartbeat(timeout, pipeline)
            return
        recent = (
            self.last_heartbeat is not None
            and (now() - self.last_heartbeat).total_seconds() < HEARTBEAT_EVERY
        )
        if recent:
            return
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(None, pipe)
                pipe.hexists(self.key, "birth")
                registered = pipe.execute()[-1]
            if not registered:
                self._register_again()
        except REDIS_DOWN as exc:  # `work()` would quit on it; the dequeue loop backs off instead
            self._redis_failed(exc)

    def _register_again(self) -> None:
        """RQ's `register_birth` minus its "already exists" check (our own heartbeat made the hash)."""
        log.warning("event=worker_reregistered reason=redis_forgot_worker")
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key)
            self.birth_date = self.last_heartbeat = now()
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def _await_redis(self, connection: Any) -> None:
        """Wait, with the loop's backoff, for a Redis that is not up yet (a worker may start first)."""
        backoff = 1.0
        while True:
            try:
                connection.ping()
                break
            except REDIS_DOWN as exc:
                self._redis_failed(exc)
                time.sleep(backoff)
                backoff = min(backoff * self.exponential_backoff_factor, self.max_connection_wait_time)
        self._redis_back()
