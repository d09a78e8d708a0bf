"""The simulator's plain-HTTP routes: Bing's conversation create, Copilot's REST, the `/_sim` API.

websockets serves HTTP only through `process_request`, so every non-websocket request
is answered here and the websocket paths (`/sydney/ChatHub`, `/c/api/chat`) fall through
(return None) to the handshake. One port for everything keeps the simulator's address a
single URL; the two dialects' paths do not overlap. Copilot's own routes live in
`copilot_routes`.

websockets' HTTP parser refuses request bodies (a handshake has none), so
`BodyAwareConnection` lifts a request's body off the byte stream before the parser sees
it; `POST /_sim/config` then reads JSON from the body (or the query string), and
`POST /c/api/start` its options.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.simulator import chathub, cloudflare_routes, copilot_media, copilot_routes, kblob
from tests.simulator.accounts import Lease, account_of
from tests.simulator.copilot_routes import CopilotRoutes, request_account
from tests.simulator.http_util import bad_gateway, challenge_page, cookies, json_response
from tests.simulator.state import SimulatorState
from tests.simulator.tls_hello import ClientHello

log = logging.getLogger(__name__)

CHATHUB_PATH = "/sydney/ChatHub"
CREATE_SUFFIX = "/turing/conversation/create"


class BodyAwareConnection(ServerConnection):
    """A `ServerConnection` that lets plain-HTTP requests carry a (small) body.

    It holds incoming bytes until the request head is complete; if the head announces a
    body, it waits for it, keeps it as `self.body` and passes the head on with
    `Content-Length: 0`. Once the head has been passed on, bytes flow straight through,
    so websocket traffic is untouched.
    """

    MAX_HEAD = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body = b""
        self._pending: bytes | None = b""
        self.account_lease: Lease | None = None
        """The account slot a chat upgrade took (`Routes.upgrade`); the session releases it."""
        self.client_hello: ClientHello | None = None
        """The TLS ClientHello, on the TLS port (`tls_listener`); None on the plain port."""

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio entry point: the socket is gone, so its account slot is free (even mid-handshake)."""
        if self.account_lease is not None:
            self.account_lease.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """asyncio entry point for received bytes (see the class docstring)."""
        if self._pending is None:
            super().data_received(data)
            return
        pending = self._pending + data
        head, separator, rest = pending.partition(b"\r\n\r\n")
        if not separator and len(pending) < self.MAX_HEAD:
            self._pending = pending
            return
        lines = head.split(b"\r\n")
        length = 0
        for index, line in enumerate(lines):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
                lines[index] = b"Content-Length: 0"
        if length and len(rest) < length:
            self._pending = pending
            return
        self._pending = None
        if not separator or not length:
            super().data_received(pending)
            return
        self.body = rest[:length]
        super().data_received(b"\r\n".join(lines) + separator + rest[length:])


class Routes:
    """`process_request` for the simulator: answers HTTP, lets valid websocket upgrades through."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.copilot = CopilotRoutes(state)

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        """Dispatch one request; None means "go on with the websocket handshake".

        The Cloudflare gate (`cloudflare_routes.screen`) sees every request but `/_sim/*`
        first. On the TLS port every cookie set is `Secure`, as the real upstream's are.
        """
        url = urlsplit(request.path)
        if not url.path.startswith("/_sim/"):
            if url.path not in (CHATHUB_PATH, copilot_routes.CHAT_PATH):
                self.state.stats.rest_calls += 1  # an upstream round trip that is not an upgrade
            account = request_account(request, url.query)
            screened = cloudflare_routes.screen(self.state, connection, request, account)
            if screened is not None:
                return screened
        response = self.route(connection, request)
        if response is not None and getattr(connection, "client_hello", None) is not None:
            cloudflare_routes.secure_cookies(response)
        return response

    def route(self, connection: ServerConnection, request: Request) -> Response | None:
        """The answer to one request past the gate (see `__call__`)."""
        url = urlsplit(request.path)
        path, method = url.path, request.method
        if path == CHATHUB_PATH:
            origins = request.headers.get_all("Origin")
            if len(origins) > 1:
                # websockets would refuse the upgrade (RFC 6454 allows one Origin); Bing's
                # front end is not known to, so flag the client bug and carry on.
                self.state.violation(f"{len(origins)} Origin headers on the ChatHub upgrade (send one)")
                del request.headers["Origin"]
                request.headers["Origin"] = origins[-1]
            account = account_of(cookies(request.headers))
            self.state.accounts.saw(account, request.headers.get("User-Agent"))
            if self.state.accounts.fault(account) == "cloudflare":
                self.state.accounts.reject(account, "cloudflare")
                return challenge_page()
            return self.upgrade(connection, account)
        if path == copilot_routes.CHAT_PATH:
            refused = self.copilot.check_upgrade(request, url.query)
            if refused is not None:
                return refused
            return self.upgrade(connection, self.copilot.account(request, url.query))
        if path.startswith(copilot_media.GENERATED_PATH) and method == "GET":
            return copilot_media.serve_generated(path)
        if path == "/" or path.startswith(copilot_routes.API):
            return self.copilot(method, path, request, getattr(connection, "body", b""))
        if path == kblob.PATH and method == "POST":
            return kblob.upload(self.state, request, getattr(connection, "body", b""))
        if path.endswith(CREATE_SUFFIX):
            return self.create(request) if method == "GET" else json_response(405, {"error": "GET only"})
        if path.startswith("/_sim/"):
            values: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
            body = getattr(connection, "body", b"")
            if body:
                try:
                    loaded = json.loads(body)
                except ValueError:
                    return json_response(400, {"error": "the body must be a JSON object"})
                if not isinstance(loaded, dict):
                    return json_response(400, {"error": "the body must be a JSON object"})
                values.update(loaded)
            return self.control(method, path, values)
        return json_response(404, {"error": f"no route for {path}"})

    def upgrade(self, connection: ServerConnection, account: str) -> Response | None:
        """Take an account slot for a chat websocket, or refuse the upgrade with 502 (B5a)."""
        lease = self.state.accounts.acquire(account)
        if lease is None:
            log.info("event=upgrade_refused reason=account_overloaded")
            return bad_gateway()
        if isinstance(connection, BodyAwareConnection):
            connection.account_lease = lease
        return None

    def create(self, request: Request) -> Response:
        """`GET /turing/conversation/create` (A1.1): ids in the body, signatures in headers.

        Also the ChatHub account probe: an account's fault shows here as A1.1 documents it
        (`UnauthorizedRequest` / `Forbidden` bodies, 404 for throttling, a Cloudflare page),
        and `captcha` as a `CaptchaChallenge` result (a simulator choice: Bing is not
        known to refuse create for it).
        """
        jar = cookies(request.headers)
        muid_value = secrets.token_hex(16).upper()
        muid = ("Set-Cookie", f"MUIDB={muid_value}; Path=/; HttpOnly; SameSite=None; Secure")
        account = account_of(jar)
        self.state.accounts.saw(account, request.headers.get("User-Agent"))
        fault = "unauthorized" if jar.get("_U") == "revoked" else self.state.accounts.fault(account)
        if fault is not None:
            self.state.accounts.reject(account, fault)
            log.info("event=create refused=%s", fault)
        if fault == "cloudflare":
            return challenge_page()
        if fault == "throttled":
            return json_response(404, {"error": "not found"})
        results = {
            "unauthorized": ("UnauthorizedRequest", chathub.LOGIN_TEXT),
            "region": ("Forbidden", chathub.REGION_TEXT),
            "captcha": ("CaptchaChallenge", chathub.CAPTCHA_TEXT),
        }
        if fault in results:
            value, message = results[fault]
            return json_response(200, {"result": {"value": value, "message": message}}, [muid])
        conversation = self.state.create_conversation(signed_in="_U" in jar)
        log.info("event=create conversation=%s signed_in=%s", conversation.id, conversation.signed_in)
        body = {
            "conversationId": conversation.id,
            "clientId": conversation.client_id,
            "result": {"value": "Success", "message": None},
        }
        return json_response(
            200,
            body,
            [
                ("X-Sydney-Conversationsignature", conversation.signature),
                ("X-Sydney-Encryptedconversationsignature", conversation.encrypted_signature),
                muid,
            ],
        )

    def control(self, method: str, path: str, query: dict[str, Any]) -> Response:
        """The `/_sim/*` control API used by tests and the support fixture."""
        state = self.state
        name = path[len("/_sim/") :]
        answer = cloudflare_routes.control(state, method, name, query)
        if answer is not None:
            return answer
        if method == "GET":
            if name == "health":
                return json_response(200, {"ok": True})
            if name == "stats":
                return json_response(200, {**state.stats.as_json(), "accounts": state.accounts.as_json()})
            if name == "accounts":
                return json_response(200, state.accounts.as_json())
            if name.startswith("accounts/"):
                account = state.accounts.accounts.get(unquote(name[len("accounts/") :]))
                if account is None:
                    return json_response(404, {"error": "no such account"})
                return json_response(200, state.accounts.view(account))
            if name == "conversations":
                dialect = query.get("dialect")
                ids = [*state.conversations] if dialect in (None, "chathub") else []
                ids += [*state.copilot_conversations] if dialect in (None, "copilot") else []
                return json_response(200, ids)
            if name.startswith("conversations/"):
                conversation_id = unquote(name[len("conversations/") :])
                if conversation_id in state.copilot_conversations:
                    return json_response(200, state.copilot_conversations[conversation_id].as_json())
                conversation = state.conversations.get(conversation_id)
                if conversation is None:
                    return json_response(404, {"error": "no such conversation"})
                return json_response(200, conversation.as_json(state.config.expiry_seconds))
            if name == "last_invocation":
                return json_response(200, state.last_invocation)
            if name == "last_send":
                return json_response(200, state.last_send)
            if name == "challenges":
                return json_response(200, [challenge.as_json() for challenge in state.challenges])
            if name == "attachments":
                return json_response(200, list(state.attachments.values()))
            if name == "config":
                gate = state.cloudflare.config_json()
                return json_response(200, {**state.config.as_json(), "cloudflare": gate})
        elif method == "POST":
            if name == "config":
                try:
                    state.config.update(query)
                except ValueError as exc:
                    return json_response(400, {"error": str(exc)})
                log.info("event=configure keys=%s", ",".join(sorted(query)))
                return json_response(200, state.config.as_json())
            if name == "reset":
                state.reset()
                return json_response(200, {"ok": True})
            if name == "forget":
                # The upstream loses a conversation (server-side expiry, a purge): unlike a
                # DELETE from the account's UI, nothing is left of it, for either dialect.
                conversation_id = str(query.get("conversation") or "")
                found = state.copilot_conversations.pop(conversation_id, None) or state.conversations.pop(
                    conversation_id, None
                )
                log.info("event=forget conversation=%s found=%s", conversation_id, found is not None)
                return json_response(200 if found is not None else 404, {"forgotten": found is not None})
            if name.startswith("accounts/") and len(name) > len("accounts/"):
                try:
                    account = state.accounts.configure(unquote(name[len("accounts/") :]), query)
                except ValueError as exc:
                    return json_response(400, {"error": str(exc)})
                log.info("event=configure_account keys=%s", ",".join(sorted(query)))
                return json_response(200, state.accounts.view(account))
        return json_response(404, {"error": f"no route for {method} {path}"})
