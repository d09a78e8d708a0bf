"""`426 Upgrade Required` for a websocket upgrade on any `…/responses` path, before anything else runs.

Codex CLI may open the Responses WebSocket mode first (`GET /v1/responses` with
`Upgrade: websocket`). Only a 426 makes it fall back to HTTP at once (openai/codex
PR #10824); a 404 or 405 makes it spend its reconnect budget first, a 10–20 s stall
with warnings on every new session. This gateway streams over HTTP only, so the
upgrade is refused at once, as WSGI middleware in front of Flask: no authentication,
no Redis, no request hooks — the answer costs nothing and cannot fail on a busy
Redis. The body is OpenAI's error shape, so a client that prints it says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

BODY = json.dumps(
    {
        "error": {
            "message": (
                "This gateway does not offer the Responses WebSocket mode; "
                "send POST /v1/responses over HTTP (streaming with SSE) instead."
            ),
            "type": "invalid_request_error",
            "param": None,
            "code": "websocket_not_supported",
        }
    }
).encode()


def is_responses_upgrade(environ: dict[str, Any]) -> bool:
    """A `GET` asking to upgrade to a websocket on a path that ends in `/responses` (any prefix)."""
    if environ.get("REQUEST_METHOD") != "GET":
        return False
    if "websocket" not in str(environ.get("HTTP_UPGRADE", "")).lower():
        return False
    path = str(environ.get("PATH_INFO", "")).rstrip("/")
    return path == "/responses" or path.endswith("/responses")


class RefuseResponsesWebsocket:
    """WSGI middleware: answers a Responses websocket upgrade with 426, passes everything else on."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_responses_upgrade(environ):
            return self.app(environ, start_response)
        start_response(
            "426 Upgrade Required",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(BODY))),
                # HTTP/1.1 is what to use instead; saying so is what RFC 9110 asks of a 426.
                ("Upgrade", "HTTP/1.1"),
                ("Connection", "Upgrade, close"),
            ],
        )
        return [BODY]
