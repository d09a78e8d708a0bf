"""The web side of a turn's trace (`service.runtime.trace`): started when the request comes in,
marked along the pipeline, saved once the first SSE byte is handed to the server.

Only with TRACE_REQUESTS=1 and the request's `X-Gateway-Trace: 1` header: the benchmark's
`--trace` and the round-trip test read what it saved. Every request starts with no trace
in its greenlet, so a kept-alive connection's next request never inherits one.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, request
from redis import Redis

from service.runtime import trace
from service.runtime.settings import Settings


def _begin() -> None:
    trace.adopt(None)
    if request.headers.get(trace.HEADER) == "1":
        trace.start("web").mark("accept")


def saver(redis: Redis, completion_id: str) -> Callable[[], None] | None:
    """What the stream calls once its first byte is out: mark it, save the web side (traced only)."""
    current = trace.current()
    if current is None:
        return None

    def save() -> None:
        current.mark("first_byte")
        trace.save(redis, completion_id, current)

    return save


def init_app(app: Flask, settings: Settings) -> None:
    """Register the hook first, so the trace covers authentication too."""
    if settings.trace_requests:
        app.before_request(_begin)
