"""Plain-HTTP helpers shared by the simulator's routes: responses and cookie reading."""

from __future__ import annotations

import email.utils
import json
from http import HTTPStatus
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response


def http_response(
    status: int, payload: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    """A complete HTTP/1.1 response; `Connection: close` because websockets closes after it."""
    code = HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            *(extra or []),
        ]
    )
    return Response(code.value, code.phrase, headers, payload)


def json_response(status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    """A JSON response (see `http_response`)."""
    payload = json.dumps(body, ensure_ascii=False).encode()
    return http_response(status, payload, "application/json; charset=utf-8", extra)


CHALLENGE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body><div id='cf-turnstile'></div>Verifying you are human (simulated).</body></html>"
)
BAD_GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"


def challenge_page(status: int = 403) -> Response:
    """Cloudflare's managed challenge: 403 (or 503), HTML, `cf-mitigated: challenge` (needs a browser)."""
    return http_response(status, CHALLENGE_PAGE, "text/html; charset=UTF-8", [("cf-mitigated", "challenge")])


def bad_gateway() -> Response:
    """The HTTP 502 an overloaded account's upgrade gets (B5a)."""
    return http_response(502, BAD_GATEWAY_PAGE, "text/html")


def cookies(headers: Headers) -> dict[str, str]:
    """A request's cookies by name (lenient: Bing cookie strings are messy)."""
    jar: dict[str, str] = {}
    for header in headers.get_all("Cookie"):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep:
                jar[name.strip()] = value.strip()
    return jar
