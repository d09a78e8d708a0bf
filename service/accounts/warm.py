"""Keep a process's view of the account pool fresh off the path of a turn.

The registry caches the pool for SNAPSHOT_SECONDS (`Registry.all`); a turn arriving after
a quiet second used to pay for the refresh itself (ZRANGE, then a pipeline of HGETALLs:
two Redis round trips before its first token, on the web side for the door and again on
the worker side for the grant). One background loop per process refreshes it twice per
SNAPSHOT_SECONDS instead, so a turn finds it at most that old, as before, and never waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from service.accounts.registry import SNAPSHOT_SECONDS, Registry

log = logging.getLogger(__name__)

REFRESH_EVERY = SNAPSHOT_SECONDS / 2


def keep_warm(
    registry: Registry,
    *,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Refresh `registry`'s snapshot every REFRESH_EVERY seconds until `stop()` (a greenlet's loop)."""
    while not stop():
        try:
            registry.all(fresh=True)
        except RedisError as exc:  # a turn then refreshes it itself, as it did before
            log.debug("event=registry_refresh_failed error=%s", exc.__class__.__name__)
        sleep(REFRESH_EVERY)
