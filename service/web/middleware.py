"""Cross-cutting request handling: request ids, CORS, preflight and authentication.

Every response, errors included, carries an `x-request-id` (the client's own, if it
sent a sane one, so its logs and ours line up) and permissive CORS headers, because
browser front-ends call the gateway directly. The id is also put in
`service.logs.request_id_var`, which `IdsFilter` stamps on every log record.

Preflight `OPTIONS` requests are answered here, before authentication: browsers never
send credentials on a preflight, so requiring them would break every web client.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from service.logs import request_id_var
from service.web.auth import authenticate
from service.web.extension import gateway

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HEADER_LIST = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~, -]")
OPEN_PATHS = ("/healthz",)
EXPOSED_HEADERS = (
    "x-request-id, X-Conversation-Id, X-Conversation-Turns-Remaining, Retry-After, x-should-retry"
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


def _preflight() -> Response | None:
    if request.method != "OPTIONS":
        return None
    response = Response(status=204)
    del response.headers["Content-Type"]  # a 204 has no body, so no type
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
    # Echo what the browser asks for (header names only), so new SDK headers just work.
    requested = _HEADER_LIST.sub("", request.headers.get("Access-Control-Request-Headers") or "").strip()
    response.headers["Access-Control-Allow-Headers"] = requested or DEFAULT_ALLOWED_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
    return response


def _authenticate() -> None:
    if request.path in OPEN_PATHS or request.path.startswith("/admin/"):
        return  # /admin/ checks ADMIN_KEY itself (or does not exist)
    g.owner = authenticate(request.headers, gateway().settings.api_keys)


def _decorate(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id(None)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    conversation_id = g.get("conversation_id")
    if conversation_id:
        response.headers["X-Conversation-Id"] = conversation_id
    turns_remaining = g.get("turns_remaining")
    if turns_remaining is not None:
        response.headers["X-Conversation-Turns-Remaining"] = str(turns_remaining)
    return response


def init_app(app: Flask) -> None:
    """Register the hooks; order matters: id first, then preflight, then auth."""
    app.before_request(_assign_request_id)
    app.before_request(_preflight)
    app.before_request(_authenticate)
    app.after_request(_decorate)
