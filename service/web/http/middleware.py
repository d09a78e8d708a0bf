"""Cross-cutting request handling: request ids, CORS, preflight, authentication, body type.

Every response, errors included, carries an `x-request-id` (the client's own, if it
sent a sane one, so its logs and ours line up). The id is also put in
`service.runtime.logs.request_id_var`, which `IdsFilter` stamps on every log record.

CORS follows `CORS_ALLOW_ORIGINS`: browser front-ends call a keyed gateway directly, so
it allows `*` by default; an open gateway (no keys) allows no origin by default, since
any web page the operator visits could otherwise use it. In open mode a POST must also
say `Content-Type: application/json` (else 415): that is never a CORS "simple" request,
so a page cannot reach the open gateway even with a form post or a no-cors `fetch`
whose answer it never reads. With keys, a JSON body under any type is accepted (`curl -d`).

Preflight `OPTIONS` requests are answered here, before authentication: browsers never
send credentials on a preflight, so requiring them would break every web client.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import NotFound as UnknownRoute

from service.access.keys import KeyStore
from service.errors import ApiError
from service.runtime.logs import request_id_var
from service.web.http.auth import identify
from service.web.http.extension import gateway
from service.web.pipeline import quota

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PRIVATE_READS = re.compile(r"(?:/v1)?/(?:conversations|responses)/|/admin/")
_HEADER_LIST = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~, -]")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
# Their routes authenticate with ADMIN_KEY (admin_stats: the console's GET /admin/stats).
ADMIN_BLUEPRINTS = ("admin", "admin_keys", "admin_stats")
PAGES_BLUEPRINT = "console"  # the playground and console pages (service.web.console): no key to load them
EXPOSED_HEADERS = (
    "x-request-id, X-Conversation-Id, X-Conversation-Turns-Remaining, Retry-After, x-should-retry, "
    "retry-after-ms, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
    "x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
    "x-ratelimit-reset-tokens, X-Gateway-Unoffered-Tools"
)
DEFAULT_ALLOWED_HEADERS = (
    "authorization, content-type, x-conversation-id, idempotency-key, openai-organization, "
    "openai-project, x-request-id, api-key, x-stainless-arch, x-stainless-lang, x-stainless-os, "
    "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout, x-stainless-async"
)


def request_id(incoming: str | None) -> str:
    """The client's request id if it is short and plain, else a fresh `req_<32 hex>`."""
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    return f"req_{uuid.uuid4().hex}"


def _assign_request_id() -> None:
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
    request_id_var.set(g.request_id)


def allowed_origin(origin: str | None, allowed: tuple[str, ...]) -> str | None:
    """The `Access-Control-Allow-Origin` value for a request from `origin`, or None to allow none."""
    if "*" in allowed:
        return "*"
    if origin and origin in allowed:
        return origin
    return None


def _preflight() -> Response | None:
    if request.method != "OPTIONS":
        return None
    response = Response(status=204)
    del response.headers["Content-Type"]  # a 204 has no body, so no type
    if allowed_origin(request.headers.get("Origin"), gateway().settings.cors_origins) is None:
        return response  # no Access-Control-Allow-* headers: the browser refuses the real request
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
    # Echo what the browser asks for (header names only), so new SDK headers just work.
    requested = _HEADER_LIST.sub("", request.headers.get("Access-Control-Request-Headers") or "").strip()
    response.headers["Access-Control-Allow-Headers"] = requested or DEFAULT_ALLOWED_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
    return response


def _authenticate() -> None:
    if request.path in OPEN_PATHS or request.blueprint in ADMIN_BLUEPRINTS:
        return  # the admin blueprints check ADMIN_KEY themselves
    if request.path == "/admin" or request.path.startswith("/admin/"):
        # Not an admin route (none matched, or a catch-all such as `<prefix>/responses`
        # did): nothing under /admin/ is an API route, and no body is read without a key.
        raise UnknownRoute()  # rendered like any unknown URL: 404 `Invalid URL (…)`
    if request.blueprint == PAGES_BLUEPRINT:
        return  # the pages and their assets hold no secret; their scripts send the key
    gw = gateway()
    settings = gw.settings
    g.caller = identify(
        request.headers,
        settings.api_keys,
        secret=settings.secret_key,
        required=settings.auth_enabled,
        managed=KeyStore(gw.redis).lookup,
        defaults=quota.defaults(settings),
        groups=dict(settings.api_key_groups),
    )
    g.owner = g.caller.owner


def _require_json() -> None:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.method != "POST" or not (request.content_length or chunked):
        return  # no body to misread: unknown paths stay 404, an empty body a 400
    if gateway().settings.auth_enabled or request.mimetype == "application/json":
        return
    raise ApiError(
        "This gateway runs without API keys, so request bodies must be sent with "
        f"'Content-Type: application/json' (got {request.mimetype or 'none'!r}); "
        "with curl, add -H 'Content-Type: application/json'.",
        status=415,
        error_type="invalid_request_error",
        code="unsupported_media_type",
    )


def _decorate(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id(None)
    response.headers["X-Content-Type-Options"] = "nosniff"  # JSON is never sniffed into HTML
    if request.method == "GET" and _PRIVATE_READS.match(request.path):
        response.headers["Cache-Control"] = "no-store"  # transcripts and answers: no cache keeps them
    allowed = gateway().settings.cors_origins
    origin = allowed_origin(request.headers.get("Origin"), allowed)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if allowed and "*" not in allowed:
        response.vary.add("Origin")  # the answer depends on who asks; caches must know
    conversation_id = g.get("conversation_id")
    # A failed first turn kept no conversation: an id would point the client at nothing.
    if conversation_id and not (response.status_code >= 400 and g.get("conversation_new")):
        response.headers["X-Conversation-Id"] = conversation_id
    turns_remaining = g.get("turns_remaining")
    if turns_remaining is not None:
        response.headers["X-Conversation-Turns-Remaining"] = str(turns_remaining)
    return response


def init_app(app: Flask) -> None:
    """Register the hooks; order matters: id first, then preflight, then auth, then body type."""
    app.before_request(_assign_request_id)
    app.before_request(_preflight)
    app.before_request(_authenticate)
    app.before_request(_require_json)
    app.after_request(_decorate)
