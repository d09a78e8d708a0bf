"""One Copilot account's HTTP identity: its cookie jar, its user agent, its anonymous session.

Public bridges that work against the real consumer Copilot (B1.1, B5; audit finding 10)
keep, per account, a cookie jar that every upstream answer updates, and present one user
agent on every request of that account (Cloudflare binds its clearance to it, B5a). In
anonymous mode — no `_U` cookie, no access token — they first fetch the landing page
(`GET /`, for `__cf_bm`, `MUID`, `_EDGE_S`) and then `POST /c/api/start`, whose answer
sets the anonymous session cookie `__Host-copilot-anon`; without it conversation create
and the chat socket are refused (g4f: "Missing cookie: __Host-copilot-anon").

`AccountSession` owns that state for one account: `request` sends a REST call with the
jar and merges every `Set-Cookie` of the answer; `ensure_ready` bootstraps the anonymous
session when needed; each change of the jar is reported through `on_cookies(header)`
with the whole new `Cookie` header, so the caller can persist it (encrypted) and every
worker shares the same session; `probe` is the pool's cheap health check (`GET
/c/api/user`). Cookie values are never logged: only names are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from workers.upstream import copilot
from workers.upstream.cloudflare import raise_for_challenge
from workers.upstream.copilot_browser import (
    ANON_COOKIE,
    SIGNED_IN_COOKIE,
    cookie_header,
    identity_for,
    parse_cookie_header,
    parse_set_cookie,
)
from workers.upstream.errors import (
    RegionBlocked,
    TokenExpired,
    Unauthorized,
    UpstreamError,
)
from workers.upstream.wire import Transport

log = logging.getLogger(__name__)

START_PATH = "/c/api/start"
USER_PATH = "/c/api/user"
START_BODY = {
    "timeZone": "UTC",
    "startNewConversation": True,
    "teenSupportEnabled": True,
    "correctPersonalizationSetting": True,
    "performUserMerge": True,
    "deferredDataUseCapable": True,
}
"""The `/c/api/start` options of B1.1 (a conversation is started too; it costs nothing)."""
TOKEN_HINT = (
    "refresh it: send the account a new access token with PATCH /admin/accounts/{id} "
    "(or update COPILOT_ACCESS_TOKEN); signed-in tokens go stale after about an hour"
)


class AccountSession:
    """The cookie jar, user agent and anonymous session of one Copilot account."""

    def __init__(
        self,
        *,
        base_url: str = copilot.ORIGIN,
        cookies: str = "",
        access_token: str = "",
        user_agent: str,
        on_cookies: Callable[[str], None] | None = None,
        rest_bearer: bool = False,
        timeout: float = 10.0,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._jar = parse_cookie_header(cookies)
        self._access_token = access_token
        self.user_agent = user_agent
        self._on_cookies = on_cookies
        self._rest_bearer = rest_bearer
        self._timeout = timeout
        if transport is None:
            from workers.upstream.plain_transport import PlainTransport

            transport = PlainTransport(identity=identity_for(user_agent))
        self.transport = transport
        self._clock = clock
        self._log = logger or log

    # -- the jar ---------------------------------------------------------------------

    @property
    def cookies(self) -> str:
        """The account's current `Cookie` header ("" when it has none)."""
        return cookie_header(self._jar)

    @property
    def anonymous(self) -> bool:
        """No access token and no `_U`: Copilot's anonymous mode, which needs a session cookie."""
        return not self._access_token and not self._jar.get(SIGNED_IN_COOKIE)

    @property
    def has_session(self) -> bool:
        """Whether the jar holds an anonymous session cookie."""
        return bool(self._jar.get(ANON_COOKIE))

    def secret_values(self) -> list[str]:
        """Everything that must never reach a log: the token, the header and each cookie value."""
        values = [self._access_token, self.cookies, *self._jar.values()]
        return [value for value in values if value]

    def merge(self, set_cookie_lines: Iterable[str]) -> bool:
        """Apply `Set-Cookie` lines to the jar; report the new header through `on_cookies` if it changed."""
        changed: list[str] = []
        now = self._clock()
        for line in set_cookie_lines:
            parsed = parse_set_cookie(line, now=now)
            if parsed is None:
                continue
            name, value = parsed
            if value is None:
                if self._jar.pop(name, None) is not None:
                    changed.append(name)
            elif self._jar.get(name) != value:
                self._jar[name] = value
                changed.append(name)
        if changed:
            self._changed(changed)
        return bool(changed)

    def forget_session(self) -> None:
        """Drop the anonymous session cookie (the upstream refused it), so the next call bootstraps."""
        if self._jar.pop(ANON_COOKIE, None) is not None:
            self._changed([ANON_COOKIE])

    def _changed(self, names: list[str]) -> None:
        self._log.info("event=copilot_cookies_updated names=%s", ",".join(sorted(set(names))))
        if self._on_cookies is not None:
            self._on_cookies(self.cookies)

    # -- requests --------------------------------------------------------------------

    def socket_headers(self) -> dict[str, str]:
        """Headers of the chat websocket upgrade: Origin, this account's user agent and cookies."""
        headers = {"Origin": copilot.ORIGIN, "User-Agent": self.user_agent}
        if self._jar:
            headers["Cookie"] = self.cookies
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        bearer: bool | None = None,
        kind: str = "fetch",
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One REST call as this account; every `Set-Cookie` of the answer lands in the jar.

        The transport adds the account's identity (UA, client hints, language) in its browser's order.
        """
        headers = {
            "Origin": copilot.ORIGIN,
            "Referer": f"{copilot.ORIGIN}/",
            "User-Agent": self.user_agent,
            "Accept": accept,
            "x-search-uilang": "en-us",
        }
        if body:
            headers["Content-Type"] = content_type
        if self._jar:
            headers["Cookie"] = self.cookies
        if (self._rest_bearer if bearer is None else bearer) and self._access_token:
            headers["Authorization"] = f"Bearer {self._access_token}"
        reply = self.transport.request(
            method, f"{self._base_url}{path}", headers=headers, body=body, timeout=self._timeout, kind=kind
        )
        self.merge(reply.set_cookies)
        return reply.status, reply.headers, reply.body

    def refused(self, exc: UpstreamError, *, account: str) -> UpstreamError:
        """What to raise for a failed chat turn: `exc`, unless Copilot refused the credentials.

        With an access token that is `TokenExpired`, naming the cure. Anonymous, the
        session cookie is dropped so the next conversation starts a new session (the old
        session's conversations are lost with it: they belong to that cookie, B4).
        """
        if not isinstance(exc, Unauthorized) or isinstance(exc, TokenExpired):
            return exc
        if self._access_token:
            return TokenExpired(
                f"Copilot refused account #{account}'s access token ({exc}): it has expired or has the "
                f"wrong audience; {TOKEN_HINT}"
            )
        if self.anonymous and self.has_session:
            self.forget_session()
            return Unauthorized(
                f"Copilot refused account #{account}'s anonymous session ({exc}); a new session will be "
                "started for the next conversation"
            )
        return exc

    def probe(self) -> None:
        """Check the account with one cheap REST call (`GET /c/api/user`), never a chat turn; raise why not.

        For an account pool's periodic health check: returns when the account answers,
        raises `ChallengeRequired` for a Cloudflare page, `RegionBlocked` for
        `chat-service-unavailable`, `Unauthorized` (`TokenExpired` with a token) for
        401/403, `UpstreamError` otherwise. An anonymous account bootstraps its session
        first, so a probe also repairs a lost session. REST carries no access token
        (`rest_bearer`, B1.1 [U]), so a token-only failure shows on the socket, not here.
        """
        self.ensure_ready()
        status, headers, body = self.request("GET", USER_PATH)
        raise_for_gate(status, headers, "GET /c/api/user", body)
        if status == 200:
            return
        try:
            code = json.loads(body).get("errorCode") if body else None
        except (ValueError, AttributeError):
            code = None
        if code == "chat-service-unavailable":
            raise RegionBlocked("Copilot is not available to this account from this region (GET /c/api/user)")
        if status in (401, 403):
            if self._rest_bearer and self._access_token:
                raise TokenExpired(
                    f"Copilot refused the account's access token (HTTP {status}); {TOKEN_HINT}"
                )
            if self.anonymous:
                self.forget_session()  # the next call starts a new one
                raise Unauthorized(
                    f"Copilot refused the anonymous session (HTTP {status}); it will be restarted"
                )
            raise Unauthorized(
                f"Copilot refused the account's cookies (HTTP {status}); {copilot.CREDENTIALS_HINT}"
            )
        raise UpstreamError(f"Copilot's GET /c/api/user failed with HTTP {status}")

    def ensure_ready(self) -> None:
        """Bootstrap the anonymous session if this account is anonymous and has none yet."""
        if self.anonymous and not self.has_session:
            self.bootstrap()

    def bootstrap(self) -> None:
        """The landing page, then `POST /c/api/start`, as public bridges do (B1.1); raise if no session.

        A Cloudflare page on either is `ChallengeRequired`; 401/403 from start is
        `Unauthorized`; a 200 that sets no `__Host-copilot-anon` is an `UpstreamError`.
        """
        started = time.monotonic()
        status, headers, page = self.request(
            "GET", "/", accept="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            kind="navigate",
        )
        raise_for_gate(status, headers, "the landing page", page)
        status, headers, started_body = self.request("POST", START_PATH, body=json.dumps(START_BODY).encode())
        raise_for_gate(status, headers, "POST /c/api/start", started_body)
        if status in (401, 403):
            raise Unauthorized(
                f"Copilot refused to start an anonymous session (HTTP {status}); anonymous access may be "
                f"blocked for this egress: {copilot.CREDENTIALS_HINT}"
            )
        if status != 200:
            raise UpstreamError(f"Copilot's POST /c/api/start failed with HTTP {status}")
        if not self.has_session:
            raise UpstreamError("Copilot's POST /c/api/start set no __Host-copilot-anon session cookie")
        self._log.info("event=copilot_anonymous_session_started seconds=%.2f", time.monotonic() - started)


def raise_for_gate(status: int, headers: Mapping[str, str], where: str, body: bytes = b"") -> None:
    """A Cloudflare challenge (`cf-mitigated: challenge`, "Just a moment…") needs a browser: stop here."""
    raise_for_challenge(status, headers, body, where)
