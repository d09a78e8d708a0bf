"""The account pool's admission check for a new turn, and the registry it reads.

The registry is kept in `app.extensions["accounts"]` with or without the admin API, so
every surface's turn is refused at once (429) when it would wait longer than
QUEUE_MAX_WAIT_SECONDS for an account, before anything is enqueued.
"""

from __future__ import annotations

import time

from flask import Flask, current_app

from service.accounts import admission
from service.accounts.registry import Registry
from service.runtime.settings import Settings
from service.web.http.extension import gateway

EXTENSION = "accounts"


def init_app(app: Flask, settings: Settings) -> None:
    """Keep the app's account registry (on the Redis client `extension.init_app` built)."""
    redis = app.extensions["gateway"].redis
    app.extensions[EXTENSION] = Registry(redis, namespace=settings.queue_name, secret_key=settings.secret_key)


def registry() -> Registry:
    """The current app's account registry."""
    return current_app.extensions[EXTENSION]


def admit(owner: str) -> None:
    """429 at once when a new turn would wait longer than QUEUE_MAX_WAIT_SECONDS for an account."""
    settings = gateway().settings
    admission.admit(
        registry(),
        owner=owner,
        max_concurrent=settings.account_max_concurrent,
        rpm=settings.account_rpm,
        max_wait=settings.queue_max_wait_seconds,
        now=time.time(),
    )
