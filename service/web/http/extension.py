"""The web tier's per-app resources, kept in `app.extensions["gateway"]`.

One `Gateway` per Flask app holds the settings and everything built from them: the
Redis client, the relay hub, the conversation store and the RQ queue. Views reach it
through `gateway()`; nothing is stored on the app object or in module globals, so two
apps (two tests) never share state.

Nothing here connects: the Redis client opens connections on first use, and the relay
hub starts its pub/sub listener on the first subscription — after gunicorn has forked
its workers, never in the master.
"""

from __future__ import annotations

import dataclasses

from flask import Flask, current_app
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from service.runtime.redis_conn import connect
from service.runtime.settings import Settings, SettingsError
from service.state.conversations import ConversationStore
from service.state.relay_hub import RelayHub

EXTENSION = "gateway"


@dataclasses.dataclass
class Gateway:
    """Settings plus the Redis-backed services one web app uses."""

    settings: Settings
    redis: Redis
    hub: RelayHub
    store: ConversationStore
    queue: Queue


def init_app(app: Flask, settings: Settings) -> Gateway:
    """Build the app's `Gateway` from settings and register it; connects to nothing.

    The queue uses RQ's JSON serializer, as the workers do, so job payloads stay
    readable and no pickled objects cross between tiers.
    """
    if not settings.redis_configured:
        raise SettingsError(
            "REDIS_URL (or REDIS_SENTINELS) is required by the web tier (the launcher sets it, "
            "starting an embedded redis-server when none is configured)"
        )
    redis = connect(settings.redis_url, role="web", sentinel=settings.sentinel)
    gateway = Gateway(
        settings=settings,
        redis=redis,
        hub=RelayHub(redis),
        store=ConversationStore(
            redis, ttl=settings.conversation_ttl, handle_ttl=settings.upstream_handle_ttl
        ),
        queue=Queue(settings.queue_name, connection=redis, serializer=JSONSerializer),
    )
    app.extensions[EXTENSION] = gateway
    return gateway


def gateway() -> Gateway:
    """The current app's `Gateway` (inside a request or app context)."""
    found: Gateway = current_app.extensions[EXTENSION]
    return found
