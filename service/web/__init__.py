"""The gateway's web tier: a Flask app that speaks OpenAI's Chat Completions API.

A request is authenticated and validated here, enqueued as an RQ job
(`workers.jobs.run_turn`), and answered from the events the worker publishes on the
relay — as one JSON object or as an SSE stream. This package is imported by nothing
else: shared code lives in plain `service` modules so workers never load Flask.

    create_app(overrides) → Flask app
      extension    Gateway: settings, Redis, relay hub, conversation store, queue
      middleware   request ids, CORS, preflight, auth
      pipeline     the one turn pipeline every surface feeds (claim → resolve → admit → enqueue → watch)
      completions  POST …/completions: Chat Completions parse + render
      responses    POST …/responses and stored responses: the Responses API
      messages     POST /v1/messages and count_tokens: Anthropic Messages
      conversations  OpenAI's Conversations API (create, read, metadata, items)
      meta         /v1/models, DELETE /v1/conversations/<id>
      health       /healthz (liveness), /readyz (readiness), /metrics (Prometheus)
      quota        per-key limits (admit a turn, x-ratelimit-* headers, settle its usage)
      admin_keys   /admin/keys: managed API keys and their usage (only with ADMIN_KEY)
      telemetry    request metrics recorded in one after_request hook
      admin        /admin/accounts (only with ADMIN_KEY); the pool's admission check
      console      the playground page at / and the operator console at /console
      errors       every failure rendered as OpenAI's error JSON
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from service.settings import load_settings
from service.web import (
    admin,
    admin_keys,
    completions,
    console,
    conversations,
    errors,
    health,
    images,
    messages,
    meta,
    middleware,
    quota,
    responses,
    telemetry,
)
from service.web.extension import init_app


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the web app from the environment plus `overrides` (tests pass a dict).

    Raises `SettingsError` on a bad or missing setting (REDIS_URL is required), so a
    misconfigured deploy fails at start-up. Connects to nothing.
    """
    settings = load_settings({**os.environ, **(overrides or {})})
    app = Flask(__name__, static_folder=None)  # an API: no /static route to shadow paths
    # Flask's JSON provider would sort keys; keep OpenAI's key order on the wire.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Werkzeug enforces it on every read, chunked bodies included: a 413 before the rest arrives.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    init_app(app, settings)
    middleware.init_app(app)
    errors.init_app(app)
    telemetry.init_app(app)
    quota.init_app(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(meta.blueprint)
    app.register_blueprint(images.blueprint)
    admin.init_app(app, settings)  # /admin/ only with ADMIN_KEY
    app.register_blueprint(responses.blueprint)
    app.register_blueprint(messages.blueprint)
    app.register_blueprint(conversations.blueprint)
    admin_keys.init_app(app, settings)  # /admin/keys only with ADMIN_KEY
    console.init_app(app, settings)  # the playground at / and the operator console at /console
    # Its catch-all rule loses to every more specific rule, whatever the order.
    app.register_blueprint(completions.blueprint)
    return app
