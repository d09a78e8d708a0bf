"""Keeping a key's turn slots alive while their responses are open, and only then.

A key's concurrency slot (`ratelimit:<id>:turns`) is a lease: a member scored by its
expiry. It used to be as long as the longest turn (6 minutes), so a web process killed
mid-stream held its key's slot that long. Now the lease is short
(KEY_SLOT_LEASE_SECONDS) and each web process renews the leases of the responses it is
still serving, every third of a lease, in one script call for all of them. A process
that dies stops renewing: its slots free themselves within one lease period of its last
renewal, which is about two lease periods at most.

The renewing loop is one daemon thread per process (a greenlet under gunicorn's gevent
workers), started on the first lease it holds and restarted after a fork, so nothing
runs at import or in gunicorn's master.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

EXTENSION = "slot_leases"

# Scores are lease expiries in ms of Redis's clock (as `ratelimit.ADMIT` writes them); XX:
# a slot already settled (or pruned as expired) is not brought back.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i = 1, #KEYS do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ms, ARGV[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ms)
  end
end
return 1
"""


class SlotLeases:
    """The turn-slot leases this process holds, renewed until they are dropped."""

    def __init__(self, redis: Redis, *, lease_seconds: float) -> None:
        self.redis = redis
        self.lease_seconds = lease_seconds
        self._held: dict[str, str] = {}  # lease id -> its key's turns set
        self._guard = threading.Lock()
        self._owner_pid = 0

    def hold(self, turns_key: str, lease: str) -> None:
        """Renew `lease` (a member of `turns_key`) until `drop`."""
        with self._guard:
            self._held[lease] = turns_key
            if self._owner_pid != os.getpid():  # first lease, or a forked child: no loop here yet
                self._owner_pid = os.getpid()
                threading.Thread(target=self._loop, name="slot-leases", daemon=True).start()

    def drop(self, lease: str) -> None:
        """Stop renewing `lease` (its slot was settled)."""
        with self._guard:
            self._held.pop(lease, None)

    def renew(self) -> int:
        """Renew every held lease now, in one round trip; how many were renewed."""
        with self._guard:
            held = list(self._held.items())
        if not held:
            return 0
        keys = [key for _, key in held]
        leases = [lease for lease, _ in held]
        self.redis.eval(RENEW, len(keys), *keys, int(self.lease_seconds * 1000), *leases)
        return len(held)

    def _loop(self) -> None:
        pid = os.getpid()
        while self._owner_pid == pid:
            time.sleep(self.lease_seconds / 3)
            try:
                self.renew()
            except RedisError as exc:  # the slots may lapse; admission then counts them free
                log.warning("event=slot_renew_failed error=%r", exc)
            except Exception:
                log.warning("event=slot_renew_failed", exc_info=True)


def init_app(app: Flask, redis: Redis, lease_seconds: float) -> None:
    """Keep the app's lease renewer in `app.extensions`; starts nothing yet."""
    app.extensions[EXTENSION] = SlotLeases(redis, lease_seconds=lease_seconds)


def slot_leases() -> SlotLeases:
    """The current app's lease renewer."""
    found: SlotLeases = current_app.extensions[EXTENSION]
    return found
