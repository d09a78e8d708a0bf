"""The upstream transport interface: one way to reach the upstream, two implementations.

    Transport.request(method, url, headers=…, body=…, timeout=…, kind=…) -> Reply
    Transport.socket() -> Socket          open(url, headers, timeout) / send / recv / close

`plain` (`plain_transport.PlainTransport`: requests + websocket-client) is Python's own TLS and
header order, for upstreams that need no impersonation; `browser`
(`browser_transport.BrowserTransport`: curl_cffi) sends the ClientHello, ALPN, HTTP/2
settings and header order of the account's browser. Both put the account's identity on
every request (User-Agent, client hints, Accept-Language; `browser_headers`), send every
connection through the account's proxy whatever NO_PROXY says, never follow a redirect,
retry only what is transient, and map every failure onto `workers.upstream.errors`.
`UPSTREAM_CA_BUNDLE` adds CAs to the default ones (`ca_bundle`); verification stays on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from service.accounts.identity import Identity, default_identity
from workers.upstream.cloudflare import verdict
from workers.upstream.errors import Unreachable, UpstreamError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, headers (any case), body, and its raw `Set-Cookie` lines."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    set_cookies: tuple[str, ...] = ()


class Socket(Protocol):
    """One websocket: `recv` returns None when nothing arrived within its timeout."""

    def open(self, url: str, *, headers: Mapping[str, str], timeout: float) -> None: ...

    def send(self, text: str) -> None: ...

    def recv(self, timeout: float) -> str | None: ...

    def idle(self) -> bool:
        """Open, and nothing (no frame, no close) arrived unread: safe to carry a new turn."""

    def close(self) -> None: ...


class Transport(Protocol):
    """How one account reaches the upstream."""

    name: str
    identity: Identity

    @property
    def profile(self) -> str:
        """The TLS profile presented: a curl_cffi target, or `python` (plain)."""

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
    ) -> Reply: ...

    def socket(self) -> Socket: ...


# Seconds before the first retry of a REST call (doubled each time): both transports use it.
RETRY_BACKOFF = 0.5


def retrying(
    send_once: Callable[[], Reply],
    where: str,
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    transient: tuple[type[BaseException], ...] = (),
    unreachable: tuple[type[BaseException], ...] = (),
) -> Reply:
    """`send_once()`, retried on `transient` failures and 5xx (never on a Cloudflare challenge).

    The last failure is `Unreachable` when it is one of `unreachable` (no connection at all:
    refused, DNS, no route), so repeated ones mark the account (service.accounts.health).
    """
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            reply = send_once()
        except transient as exc:
            if last:
                kind = Unreachable if isinstance(exc, unreachable) else UpstreamError
                raise kind(f"cannot reach {where}: {type(exc).__name__}") from None
            log.info("event=http_retry url=%s attempt=%d error=%s", where, attempt + 1, type(exc).__name__)
        else:
            if reply.status < 500 or last or verdict(reply.status, reply.headers, reply.body) != "pass":
                return reply
            log.info("event=http_retry url=%s attempt=%d status=%d", where, attempt + 1, reply.status)
        sleep(backoff * (attempt + 1))
    raise AssertionError("unreachable")  # the loop always returns or raises


_BUNDLES: dict[str, str] = {}


def ca_bundle(extra: str) -> str | None:
    """A PEM file of the default CAs plus `extra`'s (UPSTREAM_CA_BUNDLE); None = the defaults alone."""
    if not extra:
        return None
    if extra not in _BUNDLES:
        import certifi

        with open(certifi.where(), encoding="ascii") as defaults, open(extra, encoding="ascii") as added:
            pem = defaults.read() + "\n" + added.read()
        handle, path = tempfile.mkstemp(prefix="upstream-ca-", suffix=".pem")
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(pem)
        _BUNDLES[extra] = path
    return _BUNDLES[extra]


def build_transport(
    kind: str, *, identity: Identity | None = None, proxy: str = "", ca_file: str = "", key: str = ""
) -> Transport:
    """The `browser` or `plain` transport for one account (`key` names its connection cache)."""
    who = identity or default_identity()
    if kind == "plain":
        from workers.upstream.plain_transport import PlainTransport

        return PlainTransport(identity=who, proxy=proxy, ca_file=ca_file)
    if kind == "browser":
        from workers.upstream.browser_transport import BrowserTransport

        return BrowserTransport(identity=who, proxy=proxy, ca_file=ca_file, key=key)
    raise ValueError(f"unknown UPSTREAM_TRANSPORT {kind!r}")
