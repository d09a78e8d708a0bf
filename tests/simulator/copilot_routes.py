"""Copilot's HTTP side (B1.1, B1.2): the landing page, `/c/api/*` REST, and the chat upgrade check.

`control.Routes` hands every `/` and `/c/api/…` request here. REST answers are plain
JSON; the websocket path `/c/api/chat` is only *checked* here (api-version=2, an Origin,
no revoked token — the failures B7.6 lists) and then goes on to the handshake and
`copilot_session`.

Cookies are set without `Secure`: on the plain port a real cookie jar (Python's
`http.cookiejar` included) would never send a Secure cookie back, and the anonymous
identity would be lost. On the TLS port `control.Routes` adds `Secure` to every cookie, as
the real upstream sets them (and as a `__Host-` cookie requires). A token or `_U` cookie
equal to `revoked` is the simulator's invalid/expired credential (HTTP 401).

Anonymous mode (no `_U`, no access token) works the way public bridges bootstrap it (B1.1,
B5): `GET /` sets `__cf_bm` / `MUID` / `_EDGE_S`, `POST /c/api/start` issues the session
cookie `__Host-copilot-anon` (signed with a per-process key, so it survives `/_sim/reset`
but not a forged value), and with `copilot_anon_required` (default on) the conversation
routes and the chat upgrade answer 401 without a valid one. `copilot_rotate_cookie` makes
every `/c/api/*` answer set a fresh `__cf_bm`, as Cloudflare does, for clients that must
merge what the upstream sets.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.simulator import copilot, copilot_media
from tests.simulator.accounts import account_of
from tests.simulator.copilot_state import REVOKED, CopilotConversation, identity
from tests.simulator.http_util import challenge_page, cookies, http_response, json_response
from tests.simulator.state import SimulatorState

log = logging.getLogger(__name__)

CHAT_PATH = "/c/api/chat"
API = "/c/api/"
REMAINING_TURNS = 100
"""What `/c/api/start` reports as `remainingTurns`; informational, never enforced (B4 has no limit)."""
REGION_BODY = {"errorCode": "chat-service-unavailable", "message": "Copilot is not available in your region."}
UNAUTHORIZED_BODY = {"error": "unauthorized", "message": "Invalid or expired access token"}
NO_SESSION_BODY = {
    "error": "unauthorized",
    "message": "Missing or invalid __Host-copilot-anon session: start one with POST /c/api/start",
}
ANON_COOKIE = "__Host-copilot-anon"
LANDING_PAGE = (
    b"<!doctype html><html><head><title>Microsoft Copilot: Your AI companion</title></head>"
    b"<body><div id='app'>Copilot (simulated)</div></body></html>"
)


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    return value[len("Bearer ") :].strip() if value.startswith("Bearer ") else None


def _revoked(headers: Headers, jar: dict[str, str], access_token: str | None = None) -> bool:
    return REVOKED in (jar.get("_U"), _bearer(headers), access_token)


def request_account(request: Request, query: str = "") -> str:
    """The account of a Copilot request (`accounts.account_of`): socket token, Bearer, `_U`, anon cookie."""
    token = parse_qs(query, keep_blank_values=True).get("accessToken", [None])[0]
    return account_of(cookies(request.headers), access_token=token or _bearer(request.headers))


def _cookie(name: str, value: str, *, max_age: int | None = None) -> tuple[str, str]:
    """A Set-Cookie header (host-only, Path=/, no Secure: see the module docstring)."""
    parts = [f"{name}={value}", "Path=/"]
    if max_age is not None:
        expires = email.utils.formatdate(time.time() + max_age, usegmt=True)
        parts.append(f"Expires={expires}")
    parts.extend(["HttpOnly", "SameSite=Lax"])
    return ("Set-Cookie", "; ".join(parts))


class CopilotRoutes:
    """Answers Copilot's HTTP requests against the shared simulator state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def violation(self, text: str) -> None:
        """Record a client violation, tagged with the dialect."""
        self.state.violation(f"copilot: {text}")

    def account(self, request: Request, query: str = "") -> str:
        """The account of a request (see `request_account`)."""
        return request_account(request, query)

    def check_upgrade(self, request: Request, query: str) -> Response | None:
        """Refuse a bad `/c/api/chat` upgrade (400 / 403 / 401); None lets the handshake go on."""
        params = parse_qs(query, keep_blank_values=True)
        if params.get("api-version", [None])[0] != "2":
            return json_response(400, {"error": "api-version=2 is required"})
        if not request.headers.get_all("Origin"):
            return json_response(403, {"error": "Origin header required"})
        token = params.get("accessToken", [None])[0]
        if _revoked(request.headers, cookies(request.headers), token):
            log.info("event=copilot_upgrade_refused reason=revoked_token")
            return json_response(401, {"error": "unauthorized"})
        if self.needs_session(request, query):
            log.info("event=copilot_upgrade_refused reason=no_anonymous_session")
            return json_response(401, NO_SESSION_BODY)
        account = self.account(request, query)
        self.state.accounts.saw(account, request.headers.get("User-Agent"))
        if self.state.accounts.fault(account) == "unauthorized":
            self.state.accounts.reject(account, "unauthorized")
            log.info("event=copilot_upgrade_refused reason=account_unauthorized")
            return json_response(401, {"error": "unauthorized"})
        return None

    def anon_value(self) -> str:
        """A fresh `__Host-copilot-anon` value: a nonce and its signature."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def anon_valid(self, value: str | None) -> bool:
        """Whether `value` is an anonymous session this process issued."""
        nonce, dot, signature = (value or "").rpartition(".")
        return bool(dot and nonce) and hmac.compare_digest(signature, self._sign(nonce))

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self.state.anon_secret, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")

    def needs_session(self, request: Request, query: str = "") -> bool:
        """Anonymous (no `_U`, no token) without a valid anon session, while that is required."""
        if not self.state.config.copilot_anon_required:
            return False
        jar = cookies(request.headers)
        token = parse_qs(query, keep_blank_values=True).get("accessToken", [None])[0]
        if jar.get("_U") or token or _bearer(request.headers):
            return False
        return not self.anon_valid(jar.get(ANON_COOKIE))

    def account_fault(self, method: str, name: str, account: str) -> Response | None:
        """How an account's fault shows on REST (None: not at all, the request goes on).

        `unauthorized` → 401 everywhere (B7.6, g4f); `cloudflare` → the challenge page
        everywhere (B5: Cloudflare gates page and chat). `GET /c/api/user` is the account
        probe and also reflects `captcha` (the same browser-only verdict) and `region`
        (403 with the chat's `chat-service-unavailable` code) — simulator choices, since the
        real endpoint is only documented to 401; `throttled` shows on `POST /c/api/start`
        as `isBlocked`/`banExpiresAt` instead. The landing page (`name` "/") only shows
        `cloudflare`.
        """
        fault = self.state.accounts.fault(account)
        probe = name == "user" and method == "GET"
        refusals: dict[str, Callable[[], Response]] = {
            "unauthorized": lambda: json_response(401, UNAUTHORIZED_BODY),
            "cloudflare": challenge_page,
        }
        if probe:
            refusals.update(captcha=challenge_page, region=lambda: json_response(403, REGION_BODY))
        elif name == "/":
            del refusals["unauthorized"]  # the landing page needs no credential
        if fault not in refusals:
            return None
        self.state.accounts.reject(account, fault)
        log.info("event=copilot_rest_refused fault=%s", fault)
        return refusals[fault]()

    def __call__(self, method: str, path: str, request: Request, body: bytes) -> Response:
        """One REST request (`/` or `/c/api/…`), with a rotated `__cf_bm` if so configured."""
        response = self._answer(method, path, request, body)
        if path.startswith(API) and self.state.config.copilot_rotate_cookie:
            response.headers["Set-Cookie"] = _cookie("__cf_bm", secrets.token_urlsafe(32), max_age=1800)[1]
        return response

    def _answer(self, method: str, path: str, request: Request, body: bytes) -> Response:
        jar = cookies(request.headers)
        account = self.account(request)
        self.state.accounts.saw(account, request.headers.get("User-Agent"))
        if path == "/":
            if method != "GET":
                return json_response(405, {"error": "GET only"})
            return self.account_fault(method, "/", account) or self.landing()
        if _revoked(request.headers, jar):
            return json_response(401, UNAUTHORIZED_BODY)
        name = path[len(API) :]
        refused = self.account_fault(method, name, account)
        if refused is not None:
            return refused
        signed_in = "_U" in jar or _bearer(request.headers) is not None
        if name == "start" and method == "POST":
            anonymous = not signed_in and not self.anon_valid(jar.get(ANON_COOKIE))
            return self.start("" if anonymous else identity(jar), signed_in, body, account)
        if name == "attachments" and method == "POST":
            return self.attach(request, body, account)
        if name.split("/")[0] == "conversations" and self.needs_session(request):
            log.info("event=copilot_rest_refused reason=no_anonymous_session")
            return json_response(401, NO_SESSION_BODY)
        owner = identity(jar)
        if name == "conversations" and method == "POST":
            conversation = self.state.create_copilot_conversation(owner=owner, signed_in=signed_in)
            log.info("event=copilot_create conversation=%s", conversation.id)
            return json_response(200, {"id": conversation.id})
        if name == "conversations" and method == "GET":
            return json_response(200, {"results": [_summary(c) for c in self._owned(owner)]})
        if name == "user" and method == "GET":
            return json_response(200, {"firstName": "Test" if signed_in else None})
        if name.startswith("conversations/"):
            return self.conversation(method, unquote(name[len("conversations/") :]), owner)
        return json_response(404, {"error": f"no route for {method} {path}"})

    def attach(self, request: Request, body: bytes, account: str) -> Response:
        """`POST /c/api/attachments`: raw image bytes → `{"url": …}` for a `send` image part (B1.1).

        Needs the account's credentials like the conversation routes (an anonymous caller
        needs its session cookie). Every upload is recorded for `GET /_sim/attachments`.
        """
        if self.needs_session(request):
            log.info("event=copilot_rest_refused reason=no_anonymous_session")
            return json_response(401, NO_SESSION_BODY)
        kind = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not kind.startswith("image/") or not body:
            self.violation(f"POST /c/api/attachments with content-type {kind!r} and {len(body)} bytes")
            return json_response(400, {"error": "an image body with an image/* content-type is required"})
        url, record = copilot_media.attachment(body, kind, account)
        self.state.attachments[url] = record
        log.info("event=copilot_attachment bytes=%d", len(body))
        return json_response(200, {"url": url})

    def landing(self) -> Response:
        """`GET /`: the page clients fetch first for Cloudflare and session cookies."""
        extra = [
            _cookie("__cf_bm", secrets.token_urlsafe(32), max_age=1800),
            _cookie("MUID", secrets.token_hex(16).upper(), max_age=34_560_000),
            _cookie("_EDGE_S", f"F=1&SID={secrets.token_hex(16).upper()}"),
        ]
        return http_response(200, LANDING_PAGE, "text/html; charset=utf-8", extra)

    def start(self, owner: str, signed_in: bool, body: bytes, account: str) -> Response:
        """`POST /c/api/start`: a (new or current) conversation, and an anon cookie if needed."""
        options: Any = None
        try:
            options = json.loads(body) if body else None
        except ValueError:
            pass
        if not isinstance(options, dict):
            self.violation("POST /c/api/start without a JSON object body")
            options = {}
        extra = []
        if not owner:
            anon = self.anon_value()
            extra.append(_cookie(ANON_COOKIE, anon, max_age=31_536_000))
            owner = identity({ANON_COOKIE: anon})
        owned = self._owned(owner)
        if options.get("startNewConversation", True) is False and owned:
            conversation = owned[0]
        else:
            conversation = self.state.create_copilot_conversation(owner=owner, signed_in=signed_in)
        blocked = self.state.accounts.fault(account) == "throttled"
        ban = copilot.iso_offset(self.state.accounts.throttled_until(account)) if blocked else None
        body_out = {
            "currentConversationId": conversation.id,
            "remainingTurns": REMAINING_TURNS,
            "isBlocked": blocked,
            "banExpiresAt": ban,
        }
        return json_response(200, body_out, extra)

    def conversation(self, method: str, rest: str, owner: str) -> Response:
        """`GET …/<id>/history` and `DELETE …/<id>`; unknown or foreign ids are 404."""
        conversation_id, _, tail = rest.partition("/")
        conversation = self.state.copilot_conversations.get(conversation_id)
        if conversation is None or not conversation.usable_by(owner):
            return json_response(404, {"error": "conversation not found"})
        if method == "GET" and tail == "history":
            return json_response(200, {"results": _history(conversation)})
        if method == "DELETE" and not tail:
            conversation.deleted = True
            log.info("event=copilot_delete conversation=%s", conversation.id)
            return json_response(200, {})
        return json_response(404, {"error": f"no route for {method} {API}conversations/{rest}"})

    def _owned(self, owner: str) -> list[CopilotConversation]:
        """`owner`'s live conversations, newest first."""
        return [c for c in reversed(self.state.copilot_conversations.values()) if c.usable_by(owner)]


def _summary(conversation: CopilotConversation) -> dict[str, Any]:
    """One entry of `GET /c/api/conversations` (the reference names no fields; kept minimal)."""
    return {"id": conversation.id, "title": conversation.title}


def _history(conversation: CopilotConversation) -> list[dict[str, Any]]:
    """The messages of completed turns, human then ai."""
    messages: list[dict[str, Any]] = []
    for turn in conversation.turns:
        messages.append({"author": "human", "content": [{"type": "text", "text": turn.user}]})
        content: list[dict[str, Any]] = [{"type": "text", "text": turn.bot}]
        if turn.image is not None:
            content.append({"type": "image", "url": turn.image["url"]})
        messages.append({"author": "ai", "content": content})
    return messages
