"""The account pool's admission check for a new turn, and the registry it reads.

The registry is kept in `app.extensions["accounts"]` with or without the admin API, so
every surface's turn is refused at once (429) when it would wait longer than
QUEUE_MAX_WAIT_SECONDS for an account, before anything is enqueued.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, g

from service.accounts import admission, groups
from service.accounts.registry import Registry
from service.errors import UpstreamUnavailable
from service.runtime import metrics
from service.runtime.settings import Settings
from service.web.http.extension import gateway

EXTENSION = "accounts"


def init_app(app: Flask, settings: Settings) -> None:
    """Keep the app's account registry (on the Redis client `extension.init_app` built)."""
    redis = app.extensions["gateway"].redis
    app.extensions[EXTENSION] = Registry(redis, namespace=settings.queue_name, secret_key=settings.secret_key)


def registry() -> Registry:
    """The current app's account registry."""
    found: Registry = current_app.extensions[EXTENSION]
    return found


def caller_group() -> str:
    """The account group the caller's turns run on (`default` for an open gateway)."""
    caller = g.get("caller")
    return caller.group if caller is not None else groups.DEFAULT_GROUP


def admit(owner: str, group: str = groups.DEFAULT_GROUP) -> None:
    """429 at once when a new turn would wait longer than QUEUE_MAX_WAIT_SECONDS for an account.

    Only `group`'s accounts count; a group with no account at all is a 503 naming it.
    """
    settings = gateway().settings
    try:
        admission.admit(
            registry(),
            group=group,
            owner=owner,
            max_concurrent=settings.account_max_concurrent,
            rpm=settings.account_rpm,
            max_wait=settings.queue_max_wait_seconds,
            now=time.time(),
        )
    except UpstreamUnavailable:
        metrics.GROUP_UNAVAILABLE.labels(group=group).inc()
        raise
