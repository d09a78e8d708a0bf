"""Liveness, readiness and the Prometheus scrape: `/healthz`, `/readyz`, `/metrics`.

- `/healthz` is liveness: the process answers. It touches nothing else, so a Redis
  outage never makes an orchestrator restart healthy web processes (which would not
  bring Redis back, only drop every open stream).
- `/readyz` is readiness: Redis answers, at least one worker on our queue sent a
  heartbeat recently, and at least one upstream account is ready or cooling down (not
  every one needing attention, unreachable or disabled: the pool's own states). A load balancer
  stops sending traffic to a process that could only answer 503s.
- `/metrics` renders `service.runtime.metrics` for Prometheus (all gunicorn processes merged).

All three are unauthenticated (`middleware.OPEN_PATHS`) and cost at most a few Redis
round trips. Each health body says what was checked:
`{"status": "ok"|"fail", "checks": {"redis": {...}, "workers": {...}, "accounts": {...}}}`.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from redis import Redis
from rq import Queue
from rq.utils import utcparse
from rq.worker_registration import get_keys

from service.accounts.account import COOLING, READY
from service.accounts.registry import Registry
from service.runtime import metrics
from service.web.http.extension import Gateway, gateway

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)

# A worker heartbeats about once a second while its loop runs (workers/gevent_worker.py); one
# silent for this long is dead or wedged, whatever RQ's minutes-long key TTL says.
WORKER_HEARTBEAT_MAX_AGE = 15.0
Check = dict[str, Any]


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: 200 whenever this process can answer at all."""
    return jsonify({"status": "ok", "checks": {"process": {"ok": True}}})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 when a turn could be served now, else 503; the body says why."""
    gw = gateway()
    checks: dict[str, Check] = {"redis": check_redis(gw.redis)}
    if checks["redis"]["ok"]:
        checks["workers"] = check_workers(gw.queue)
    else:
        checks["workers"] = {"ok": False, "skipped": "redis unreachable"}
    checks["accounts"] = check_accounts(gw)
    ok = all(check["ok"] for check in checks.values())
    response = jsonify({"status": "ok" if ok else "fail", "checks": checks})
    response.status_code = 200 if ok else 503
    return response


@blueprint.get("/metrics")
def scrape() -> Response:
    """Prometheus text exposition of the web tier's metrics."""
    return Response(metrics.exposition(), mimetype=None, content_type=metrics.CONTENT_TYPE)


def check_redis(redis: Redis) -> Check:
    """PING Redis once."""
    try:
        redis.ping()
    except Exception as exc:  # any failure to reach Redis means "not ready", whatever its type
        metrics.REDIS_ERRORS.labels(tier="web").inc()
        log.warning("event=readiness_redis_failed error=%s", exc.__class__.__name__)
        return {"ok": False, "error": exc.__class__.__name__}
    return {"ok": True}


def check_workers(queue: Queue, *, now: datetime.datetime | None = None) -> Check:
    """Count workers registered for the queue whose last heartbeat is recent.

    Reads RQ's per-queue worker registry, then every member's `last_heartbeat` in one
    pipeline: two round trips whatever the number of workers.
    """
    try:
        keys = sorted(get_keys(queue=queue))
        with queue.connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "last_heartbeat")
            beats = pipe.execute()
    except Exception as exc:  # Redis failed between the ping and here
        metrics.REDIS_ERRORS.labels(tier="web").inc()
        return {"ok": False, "queue": queue.name, "error": exc.__class__.__name__}
    now = now or datetime.datetime.now(datetime.UTC)
    live = 0
    for beat in beats:
        if not beat:
            continue
        try:
            age = (now - utcparse(beat.decode())).total_seconds()
        except ValueError:
            continue
        if age <= WORKER_HEARTBEAT_MAX_AGE:
            live += 1
    return {"ok": live > 0, "queue": queue.name, "live": live, "registered": len(keys)}


def check_accounts(gw: Gateway) -> Check:
    """At least one upstream account can take turns now or soon (ready, or cooling down).

    Reads the pool's real states, so readiness agrees with GET /admin/accounts and with the
    503 a turn would get: every account needing attention, unreachable or disabled is "fail".
    Only ids and states are shown here (the endpoint is open); the admin listing has the rest.
    """
    registry: Registry = current_app.extensions["accounts"]
    try:
        accounts = registry.all(fresh=True)
    except Exception as exc:  # Redis failed: the redis check already says so
        return {"ok": False, "error": exc.__class__.__name__}
    if not accounts:
        return {"ok": False, "ready": 0, "error": "no accounts yet (a worker seeds them at start-up)"}
    now = time.time()
    states = {account.id: account.state(now) for account in accounts}
    usable = sum(1 for state in states.values() if state in (READY, COOLING))
    return {
        "ok": usable > 0,
        "ready": sum(1 for state in states.values() if state == READY),
        "states": states,
    }
