"""The lease watcher: a turn's heartbeat, its conversation lock, and its cancel flag.

While a turn runs, its watcher keeps its liveness lease (`service.turns.lease_key`) and
its account slot alive, refreshes the conversation lock it holds, and notices the web
tier's cancel flag, in one pipelined round trip every CANCEL_POLL_SECONDS. The turn
reads the outcome from three events: `cancelled`, `lock_lost` (another turn may hold the
lock now: stop, never save), and sets `stopped` when it is over.

`watch()` hands the watcher to the process's board (`_Board`): one greenlet (a thread
outside gevent) that serves every running turn of the worker, all of them in ONE pipeline
per round, instead of a greenlet and a round trip per turn. A worker holding 200 turns
sends ~3 round trips a second instead of ~700, and each turn is spared a greenlet's stack
and frames (issue #20: ≤ 0.1 MB per session). A new watcher wakes the board at once, so
a turn's first lease still goes out beside its upstream connect. `run()` is the same
rounds for one watcher, blocking until it stops.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

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
        self._last_lease = float("-inf")  # the first lease goes out at once, beside the upstream connect

    def watch(self) -> None:
        """Watch this turn from the process's board until `stopped` (or cancelled); returns at once."""
        _BOARD.add(self)

    def run(self) -> None:
        """Keep the lease (and the conversation lock) alive and notice cancellation, blocking.

        Redis being unreachable is waited out with a capped backoff and one warning:
        the turn itself fails as soon as it cannot publish, so there is nothing to
        gain from hammering Redis here (and it must never spin).
        """
        wait, failures = 0.0, 0
        while not self.stopped.wait(wait):
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    self.queue(pipe)
                    replies = pipe.execute()
            except Exception as exc:
                failures = _failed(failures, exc)
                wait = min(WATCH_BACKOFF_MAX, CANCEL_POLL_SECONDS * 2**failures)
                continue
            failures, wait = _recovered(failures), CANCEL_POLL_SECONDS
            if self.settle(replies, len(replies)):
                return

    def queue(self, pipe: Any) -> None:
        """Queue this round's commands on `pipe`: the cancel check, and the renewals when they are due."""
        request = self.request
        lease_seconds = self.settings.worker_lease_seconds
        pipe.exists(cancel_key(request.completion_id))
        if time.monotonic() - self._last_lease < max(1.0, lease_seconds / 3):
            return
        pipe.set(lease_key(request.completion_id), b"1", ex=lease_seconds)
        lane = self._lane()
        if lane is not None:
            lane.refresh(pipe)  # the account slot lives exactly as long as the turn
        if request.lock_token:
            # The conversation stays locked exactly as long as this turn lives.
            locks.refresh(pipe, request.conversation_id, request.lock_token, ttl=2 * lease_seconds)

    def settle(self, replies: list[Any], queued: int) -> bool:
        """Read this watcher's `replies` (`queued` of them); True when the watch is over (cancelled)."""
        if queued > 1:  # the renewals went out with the cancel check
            self._last_lease = time.monotonic()
            if self.request.lock_token and not replies[-1]:
                self.lock_lost.set()  # another turn may hold it now: stop, never save
        if replies[0]:
            self.cancelled.set()
            return True
        return False


def _failed(failures: int, exc: Exception) -> int:
    if failures == 0:
        log.warning("event=turn_watch_failed error=%s", exc.__class__.__name__)
    return failures + 1


def _recovered(failures: int) -> int:
    if failures:
        log.info("event=turn_watch_recovered failures=%d", failures)
    return 0


class _Board:
    """Every watching turn of this process, served in one pipeline per Redis client per round."""

    def __init__(self) -> None:
        self._watchers: list[LeaseWatcher] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False

    def add(self, watcher: LeaseWatcher) -> None:
        with self._lock:
            self._watchers.append(watcher)
            start, self._running = not self._running, True  # `_serve` clears it however it ends
        if start:  # a fresh context: no turn's trace or log ids ride on the board's round trips
            run = contextvars.Context().run
            beside(lambda: run(self._serve), name="turn-watch")  # switches to nothing: see `beside`
        self._wake.set()

    def _serve(self) -> None:
        try:
            self._rounds()  # a normal end clears `_running` itself, under the lock
        except BaseException:  # killed (with the worker's greenlets too): the next turn restarts it
            with self._lock:
                self._running = False
            raise

    def _rounds(self) -> None:
        wait, failures = 0.0, 0
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            with self._lock:
                self._watchers = [w for w in self._watchers if not w.stopped.is_set()]
                watchers = list(self._watchers)
                if not watchers:
                    self._running = False  # in the same hold as the check: an `add` now starts a new one
                    return
            try:
                done = self._round(watchers)
            except Exception as exc:
                failures = _failed(failures, exc)
                wait = min(WATCH_BACKOFF_MAX, CANCEL_POLL_SECONDS * 2**failures)
                continue
            failures, wait = _recovered(failures), CANCEL_POLL_SECONDS
            if done:
                with self._lock:
                    self._watchers = [w for w in self._watchers if w not in done]

    def _round(self, watchers: list[LeaseWatcher]) -> list[LeaseWatcher]:
        """One round trip per Redis client for all `watchers`; returns those whose watch is over."""
        done: list[LeaseWatcher] = []
        clients: dict[int, list[LeaseWatcher]] = {}
        for watcher in watchers:
            clients.setdefault(id(watcher.redis), []).append(watcher)
        for group in clients.values():
            with group[0].redis.pipeline(transaction=False) as pipe:
                counts = []
                for watcher in group:
                    before = len(pipe.command_stack)
                    watcher.queue(pipe)
                    counts.append(len(pipe.command_stack) - before)
                replies = pipe.execute()
            at = 0
            for watcher, count in zip(group, counts, strict=True):
                if watcher.settle(replies[at : at + count], count):
                    done.append(watcher)
                at += count
        return done


_BOARD = _Board()
