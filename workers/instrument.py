"""The worker's metrics: one wrapper around a job, one around the upstream's event stream.

Kept out of `workers/turn.py` so the turn reads as the turn: the job function wraps
the whole run in `job_metrics` (queue wait, turns in flight, outcome, error classes),
and the runner wraps the upstream in an `UpstreamTimer` (gateway-added and upstream
time to first token, tokens, turns in flight per account). Metric objects live in
`service.runtime.metrics`; this process serves them on WORKER_METRICS_PORT.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisError

from service import tokens
from service.runtime import livestats, metrics
from service.turns import TurnRequest
from workers.upstream.errors import UpstreamError
from workers.upstream.events import Done, Event, TextDelta

# When the running turn was enqueued (epoch seconds), for the timer created deeper down.
_enqueued_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("enqueued_at", default=None)


@contextlib.contextmanager
def job_metrics(job: Any) -> Iterator[dict[str, Any]]:
    """Count one turn in flight while it runs; record its queue wait and how it ended.

    `job` is RQ's current job (None outside a worker); its `enqueued_at` was stamped
    by the web tier. Yields a dict the caller puts the job's result summary in.
    """
    enqueued = _enqueued_at(job)
    _enqueued_var.set(enqueued)
    # The console's Live page: this turn's counters go to the job's Redis, under its queue.
    livestats.bind(getattr(job, "connection", None), str(getattr(job, "origin", "")))
    livestats.hold()  # written once when the turn ends: nothing here delays its first token
    if enqueued is not None:
        metrics.QUEUE_WAIT.observe(max(0.0, time.time() - enqueued))
        livestats.record(sums={"wait": max(0.0, time.time() - enqueued)})
    summary: dict[str, Any] = {}
    metrics.TURNS_IN_FLIGHT.inc()
    try:
        yield summary
    except BaseException as exc:
        metrics.TURNS.labels(outcome="error").inc()
        livestats.record(counts={"turns:error": 1, f"err:{exc.__class__.__name__}": 1})
        if isinstance(exc, UpstreamError):
            metrics.UPSTREAM_ERRORS.labels(error_class=exc.__class__.__name__).inc()
        elif isinstance(exc, RedisError):
            metrics.REDIS_ERRORS.labels(tier="worker").inc()
        raise
    else:
        metrics.TURNS.labels(outcome=str(summary.get("status", "done"))).inc()
        livestats.record(counts={f"turns:{summary.get('status', 'done')}": 1})
    finally:
        metrics.TURNS_IN_FLIGHT.dec()
        livestats.flush()


class UpstreamTimer:
    """Times one turn's upstream work: created when the worker is about to ask the upstream.

    Creating it observes the gateway-added time (enqueue → now); `watch` then passes
    the upstream's events through, observing the time to the first text token and the
    tokens of the finished answer, and counts the turn on its account meanwhile.
    """

    def __init__(self, dialect: str, request: TurnRequest, account: str) -> None:
        self.dialect = dialect
        self.request = request
        self.account = account
        self.started = time.monotonic()
        self._first_seen = False
        enqueued = _enqueued_var.get()
        if enqueued is not None:
            metrics.GATEWAY_FIRST_TOKEN.labels(dialect=dialect).observe(max(0.0, time.time() - enqueued))
            livestats.record(sums={"added": max(0.0, time.time() - enqueued)})

    def watch(self, events: Iterator[Event]) -> Iterator[Event]:
        """The upstream's events, unchanged."""
        in_flight = metrics.ACCOUNT_IN_FLIGHT.labels(account=self.account)
        in_flight.inc()
        try:
            for event in events:
                if not self._first_seen and isinstance(event, TextDelta):
                    self._first_seen = True
                    elapsed = time.monotonic() - self.started
                    metrics.UPSTREAM_FIRST_TOKEN.labels(dialect=self.dialect).observe(elapsed)
                elif isinstance(event, Done):
                    model = self.request.model
                    metrics.TOKENS.labels(direction="in", model=model).inc(
                        tokens.count_text(self.request.prompt)
                    )
                    metrics.TOKENS.labels(direction="out", model=model).inc(tokens.count_text(event.text))
                yield event
        finally:
            in_flight.dec()


def publish_configured_accounts(count: int) -> None:
    """Until the account pool reports states, every configured account is `ready`."""
    metrics.set_account_states({label: "ready" for label in metrics.account_labels(count)})
    for label in metrics.account_labels(count):
        metrics.ACCOUNT_IN_FLIGHT.labels(account=label).set(0)


def _enqueued_at(job: Any) -> float | None:
    stamp = getattr(job, "enqueued_at", None)
    if not isinstance(stamp, datetime.datetime):
        return None
    if stamp.tzinfo is None:  # RQ stores UTC
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()
