"""GET /admin/stats: what the console's Live page draws, in one JSON object (Bearer ADMIN_KEY).

Read from what the gateway keeps in Redis anyway, in a few round trips: RQ's worker
registry and queue, the account pool's counters, and the rolling hour of per-minute
counters the workers and web tier record (`service.runtime.livestats`). No Prometheus server.

    {"object": "stats", "now": …,
     "workers": {"live": 2, "registered": 2},
     "queue": {"name": "chat", "depth": 0, "oldest_wait_seconds": null},
     "accounts": {"total": 2, "ready": 1, "needs_attention": 1, "in_flight": 0, "turns_last_minute": 3},
     "minutes": [{"start": …, "turns": {"done": 3}, "errors": {"Throttled": 1, "HTTP 429": 2},
                  "added_first_token_ms": 12.5, "queue_wait_ms": 3.1}, …]}   # 60, oldest first
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from flask import Blueprint, Response, jsonify
from rq.job import Job

from service.accounts import manage
from service.runtime import livestats
from service.web.admin.keys import require_admin_key
from service.web.http.extension import Gateway, gateway
from service.web.http.health import check_workers
from service.web.pipeline import admission

blueprint = Blueprint("admin_stats", __name__, url_prefix="/admin")
blueprint.before_request(require_admin_key)


@blueprint.get("/stats")
def stats() -> Response:
    """Workers, queue, accounts now; turns, errors and latencies per minute over the last hour."""
    gw = gateway()
    now = time.time()
    workers = check_workers(gw.queue)
    return jsonify(
        {
            "object": "stats",
            "now": now,
            "workers": {"live": workers.get("live", 0), "registered": workers.get("registered", 0)},
            "queue": _queue(gw, now),
            "accounts": _accounts(now),
            "minutes": livestats.read(gw.redis, gw.settings.queue_name, now=now),
        }
    )


def _queue(gw: Gateway, now: float) -> dict[str, Any]:
    """Jobs waiting for a worker, and how long the oldest has waited."""
    oldest = None
    ids = gw.queue.get_job_ids(0, 0)
    if ids:
        job = Job.fetch(ids[0], connection=gw.redis, serializer=gw.queue.serializer)
        if job.enqueued_at is not None:
            oldest = round(max(0.0, now - job.enqueued_at.timestamp()), 3)
    return {"name": gw.queue.name, "depth": gw.queue.count, "oldest_wait_seconds": oldest}


def _accounts(now: float) -> dict[str, Any]:
    """How many accounts are in each state, and the pool's load."""
    registry = admission.registry()
    views = manage.views(registry, registry.all(fresh=True), now)
    states = Counter(view["state"] for view in views)
    return {
        "total": len(views),
        **{state: states.get(state, 0) for state in ("ready", "cooling", "needs_attention", "disabled")},
        "in_flight": sum(view["in_flight"] for view in views),
        "turns_last_minute": sum(view["turns_last_minute"] for view in views),
    }
