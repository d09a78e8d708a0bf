"""The `plain` upstream transport (UPSTREAM_TRANSPORT=plain): requests + websocket-client.

One of the two implementations of `workers.upstream.wire.Transport` (the other is
`browser_transport`, curl_cffi). `PlainTransport` sends the account's REST calls through
one shared `requests.Session` (Python's TLS, the account's identity headers and proxy)
and hands out sockets from `workers.upstream.transport`. `http_request` and `http_get`
are the bare calls: retried briefly on connection failures and 5xx, never following a
redirect (the `Cookie` header would go to the new host), every library failure mapped
onto the `workers.upstream.errors` tree with the URL redacted and nothing chained.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from service.accounts.identity import Identity
from workers.upstream.browser_headers import compose
from workers.upstream.errors import Unreachable, UpstreamError, UpstreamTimeout
from workers.upstream.transport import WebSocketTransport, redact_url

log = logging.getLogger(__name__)


def http_get(
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    session: requests.Session | None = None,
    retries: int = 2,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, Mapping[str, str], bytes]:
    """GET and return (status, headers, body), retrying briefly on what is transient (see `http_request`)."""
    return http_request(
        "GET",
        url,
        headers=headers,
        timeout=timeout,
        session=session,
        retries=retries,
        backoff=backoff,
        sleep=sleep,
    )


_SESSION: requests.Session | None = None


def shared_session() -> requests.Session:
    """One `requests.Session` per process, so calls to the upstream reuse connections.

    A fresh session per call (what `requests.request` does) cost a TCP connect and a
    connection pool per conversation create. The session never stores cookies: each
    request carries its account's `Cookie` header explicitly, and a shared jar would
    leak one account's cookies into another's requests.
    """
    global _SESSION
    if _SESSION is None:
        session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        _SESSION = session
    return _SESSION


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    body: bytes | None = None,
    session: requests.Session | None = None,
    retries: int = 2,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, Mapping[str, str], bytes]:
    """Send one request and return (status, headers, body), retrying briefly on what is transient.

    Only connection failures and 5xx are retried (Cloudflare hiccups); other statuses
    are returned for the dialect to judge; so are redirects, never followed (the request's
    `Cookie` header would go to the new host). A timeout is not retried, since it already
    spent the caller's budget, and becomes `UpstreamTimeout`. A retried POST may
    create a second upstream conversation; an orphaned one costs nothing.
    """
    where = redact_url(url)
    sender = (session or shared_session()).request
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            response = sender(
                method, url, headers=dict(headers), data=body, timeout=timeout, allow_redirects=False
            )
        except requests.Timeout:
            raise UpstreamTimeout(f"no answer from {where} within {timeout:g}s") from None
        except requests.RequestException as exc:
            if last:
                kind = Unreachable if isinstance(exc, requests.ConnectionError) else UpstreamError
                raise kind(f"cannot reach {where}: {type(exc).__name__}") from None
            log.info("event=http_retry url=%s attempt=%d error=%s", where, attempt + 1, type(exc).__name__)
        else:
            if response.status_code < 500 or last:
                return response.status_code, response.headers, response.content
            log.info("event=http_retry url=%s attempt=%d status=%d", where, attempt + 1, response.status_code)
        sleep(backoff * (attempt + 1))
    raise AssertionError("unreachable")  # the loop always returns or raises


class PlainTransport:
    """The `plain` transport: requests + websocket-client, Python's TLS, the account's headers and proxy."""

    name = "plain"

    def __init__(self, *, identity: Identity, proxy: str = "", ca_file: str = "") -> None:
        from workers.upstream.wire import ca_bundle

        self.identity = identity
        self._proxy = proxy
        self._ca = ca_bundle(ca_file)

    @property
    def profile(self) -> str:
        return "python"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        body: bytes | None = None,
        kind: str = "fetch",
        retries: int = 2,
    ) -> Any:
        """One call with the account's identity headers; 5xx and connection failures are retried."""
        from workers.upstream.wire import RETRY_BACKOFF, Reply, retrying

        where = redact_url(url)
        sent = dict(compose(self.identity, headers, kind))
        extra: dict[str, Any] = {"verify": self._ca or True}
        if self._proxy:
            extra["proxies"] = {"http": self._proxy, "https": self._proxy}

        def once() -> Reply:
            try:
                response = shared_session().request(
                    method, url, headers=sent, data=body, timeout=timeout, allow_redirects=False, **extra
                )
            except requests.Timeout:
                raise UpstreamTimeout(f"no answer from {where} within {timeout:g}s") from None
            raw_headers = getattr(response.raw, "headers", None)
            getlist = getattr(raw_headers, "getlist", None)
            lines = tuple(getlist("Set-Cookie")) if getlist is not None else ()
            return Reply(response.status_code, response.headers, response.content, lines)

        return retrying(
            once,
            where,
            retries=retries,
            backoff=RETRY_BACKOFF,
            transient=(requests.RequestException,),
            unreachable=(requests.ConnectionError,),
        )

    def socket(self) -> WebSocketTransport:
        return _IdentitySocket(self.identity, proxy=self._proxy, ca_file=self._ca)


class _IdentitySocket(WebSocketTransport):
    """websocket-client with the account's User-Agent and language on the upgrade."""

    def __init__(self, identity: Identity, **options: Any) -> None:
        super().__init__(**options)
        self._identity = identity

    def open(self, url: str, *, headers: Mapping[str, str], timeout: float) -> None:
        composed = {name.title() if name in ("origin", "cookie") else name: value
                    for name, value in compose(self._identity, headers, "websocket")}
        super().open(url, headers=composed, timeout=timeout)
