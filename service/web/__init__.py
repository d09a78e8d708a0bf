"""The gateway's web tier: one Flask app speaking OpenAI's and Anthropic's wire formats.

A request is authenticated and validated here, enqueued as an RQ job
(`workers.jobs.run_turn`), and answered from the events the worker publishes on the
relay — as one JSON object or as an SSE stream. This package is imported by nothing
else: shared code lives in plain `service` packages so workers never load Flask.

The sub-packages tell one request's story:

    create_app(overrides) → Flask app
      http/           the edge: app resources (extension), middleware (ids, CORS, auth),
                      body reading, error rendering, health + /metrics, paging, telemetry,
                      /v1/models in OpenAI's or Anthropic's shape (meta, model_list), and
                      the 426 for a Responses websocket upgrade (upgrade, outermost)
      pipeline/       the one turn pipeline every surface feeds: the neutral request and
                      answer, quota, resolve, submit (claim → resolve → admit → enqueue),
                      watch, and the SSE framing
      chat/           Chat Completions: routes, parse (+ JSON Schema), render
      responses/      the Responses API and stored responses: routes, parse, render
      messages/       Anthropic Messages and count_tokens: routes, parse, render
      images/         /v1/images/generations: routes, render
      conversations/  OpenAI's Conversations API
      admin/          /admin/accounts and /admin/keys (only with ADMIN_KEY)
      console/        the playground page at / and the operator console at /console, their
                      scripts and styles, and /admin/stats (docs/console.md)

Surfaces never import each other; the pipeline imports no surface (tests/unit/test_layering.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from service.runtime.settings import load_settings
from service.web import console
from service.web.admin import accounts as admin
from service.web.admin import keys as admin_keys
from service.web.chat import routes as chat_routes
from service.web.completions import routes as legacy_completions
from service.web.conversations import routes as conversations
from service.web.http import errors, health, meta, middleware, telemetry, upgrade
from service.web.http.extension import init_app
from service.web.images import routes as images
from service.web.messages import routes as messages
from service.web.pipeline import admission, quota, tracing
from service.web.responses import routes as responses


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
    tracing.init_app(app, settings)  # first: a traced request's clock starts before auth
    middleware.init_app(app)
    errors.init_app(app)
    telemetry.init_app(app)
    quota.init_app(app)
    admission.init_app(app, settings)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(meta.blueprint)
    app.register_blueprint(images.blueprint)
    admin.init_app(app, settings)  # /admin/ only with ADMIN_KEY
    app.register_blueprint(responses.blueprint)
    app.register_blueprint(messages.blueprint)
    app.register_blueprint(conversations.blueprint)
    app.register_blueprint(legacy_completions.blueprint)  # /v1/completions, /completions (`prompt`)
    admin_keys.init_app(app, settings)  # /admin/keys only with ADMIN_KEY
    console.init_app(app, settings)  # the playground at / and the operator console at /console
    # Its catch-all rule loses to every more specific rule, whatever the order.
    app.register_blueprint(chat_routes.blueprint)
    # Outermost: a Responses websocket upgrade is a 426 before auth, hooks or Redis.
    app.wsgi_app = upgrade.RefuseResponsesWebsocket(app.wsgi_app)  # type: ignore[method-assign]
    return app
