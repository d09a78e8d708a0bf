"""Blocking library calls that must not stall the gevent worker's other turns.

libcurl (curl_cffi) does its own socket I/O in C, which gevent's monkey-patching cannot
reach: a `curl_easy_perform` on the loop's thread would freeze every greenlet of the
worker for the whole request. `offload(fn)` runs such a call in the gevent hub's thread
pool (the greenlet waits cooperatively; the GIL is released inside libcurl), and
`wait_readable(fd, timeout)` / `wait_writable` wait for a socket the cooperative way, so a websocket read
polls libcurl without blocking. Outside gevent (tests, the CLI) both are the plain calls.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")
MIN_THREADS = 32  # concurrent libcurl calls per worker; a REST call holds a thread for its duration


def gevent_active() -> bool:
    """Whether this process runs under gevent's monkey-patching (the worker does)."""
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def offload(fn: Callable[[], T]) -> T:
    """`fn()`, in the hub's thread pool under gevent (its exception re-raised here)."""
    if not gevent_active():
        return fn()
    import gevent

    pool = gevent.get_hub().threadpool
    if pool.maxsize < MIN_THREADS:
        pool.maxsize = MIN_THREADS
    # The failure travels back as a value: raised inside the pool, gevent would print its
    # traceback to stderr for every refused connection, an outcome the turn reports itself.
    ok, value = pool.apply(_outcome, (fn,))
    if not ok:
        raise value
    return cast("T", value)


def _outcome(fn: Callable[[], T]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except BaseException as exc:  # re-raised in the calling greenlet by `offload`
        return False, exc


def wait_readable(fd: int, timeout: float) -> bool:
    """Whether `fd` became readable within `timeout` seconds, waiting cooperatively under gevent."""
    return _wait(fd, timeout, writable=False)


def wait_writable(fd: int, timeout: float) -> bool:
    """Whether `fd` became writable within `timeout` seconds, waiting cooperatively under gevent."""
    return _wait(fd, timeout, writable=True)


def _wait(fd: int, timeout: float, *, writable: bool) -> bool:
    read, write = ([], [fd]) if writable else ([fd], [])
    if gevent_active():
        from gevent.select import select as gevent_select

        readable, ready, _ = gevent_select(read, write, [], max(timeout, 0.0))
    else:
        readable, ready, _ = select.select(read, write, [], max(timeout, 0.0))
    return bool(readable or ready)
