"""The lease watcher: a turn's heartbeat, its conversation lock, and its cancel flag.

While a turn runs, a thread keeps its liveness lease (`service.turns.lease_key`) and
its account slot alive, refreshes the conversation lock it holds, and notices the web
tier's cancel flag, all in one pipelined round trip every CANCEL_POLL_SECONDS. The
turn reads the outcome from three events: `cancelled`, `lock_lost` (another turn may
hold the lock now: stop, never save), and sets `stopped` when it is over.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from redis import Redis

from service.runtime.settings import Settings
from service.state import locks
from service.turns import TurnRequest, cancel_key, lease_key
from workers.account_pool import AccountLane

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.3
WATCH_BACKOFF_MAX = 2.0  # longest pause between watcher retries while Redis is unreachable


def beside(target: Callable[[], object], *, name: str) -> None:
    """Run `target` beside the turn: a greenlet under gevent (as the worker runs), else a thread.

    gevent's `Thread.start()` waits for the new thread to start, which switches to every
    greenlet ready to run (the worker loop's next dequeue, this watcher up to its first wait)
    while the turn is on its way to its upstream `send`; `gevent.spawn` switches to nothing,
    so the watcher starts when the turn first waits.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn(target)
        return
    threading.Thread(target=target, name=name, daemon=True).start()


class LeaseWatcher:
    """Keeps one turn's lease, account slot and lock alive until `stopped`; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        request: TurnRequest,
        *,
        lane: Callable[[], AccountLane | None],
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.request = request
        self._lane = lane  # the turn's account lane, once it has one
        self.cancelled = threading.Event()
        self.stopped = threading.Event()
        self.lock_lost = threading.Event()

    def run(self) -> None:
        """Keep the lease (and the conversation lock) alive and notice cancellation.

        Redis being unreachable is waited out with a capped backoff and one warning:
        the turn itself fails as soon as it cannot publish, so there is nothing to
        gain from hammering Redis here (and it must never spin).
        """
        request = self.request
        lease_seconds = self.settings.worker_lease_seconds
        lease_every = max(1.0, lease_seconds / 3)
        last_lease = float("-inf")  # the first lease goes out at once, beside the upstream connect
        wait = 0.0
        failures = 0
        while not self.stopped.wait(wait):
            wait = CANCEL_POLL_SECONDS
            try:
                due = time.monotonic() - last_lease >= lease_every
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.exists(cancel_key(request.completion_id))
                    if due:
                        pipe.set(lease_key(request.completion_id), b"1", ex=lease_seconds)
                        lane = self._lane()
                        if lane is not None:
                            lane.refresh(pipe)  # the account slot lives exactly as long as the turn
                        if request.lock_token:
                            # The conversation stays locked exactly as long as this turn lives.
                            locks.refresh(
                                pipe, request.conversation_id, request.lock_token, ttl=2 * lease_seconds
                            )
                    replies = pipe.execute()
                cancelled = replies[0]
                if due:
                    last_lease = time.monotonic()
                    if request.lock_token and not replies[-1]:
                        self.lock_lost.set()  # another turn may hold it now: stop, never save
            except Exception as exc:
                if failures == 0:
                    log.warning("event=turn_watch_failed error=%s", exc.__class__.__name__)
                failures += 1
                wait = min(WATCH_BACKOFF_MAX, CANCEL_POLL_SECONDS * 2**failures)
                continue
            if failures:
                log.info("event=turn_watch_recovered failures=%d", failures)
                failures = 0
            if cancelled:
                self.cancelled.set()
                return

