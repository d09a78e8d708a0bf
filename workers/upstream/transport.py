"""The upstream websocket: websocket-client behind the `workers.upstream.wire.Socket` shape.

Dialects (`workers.upstream.chathub`, `copilot`) are pure; this module owns the socket
(`websocket-client`, which gevent's monkey-patching makes cooperative in the worker),
its deadlines, and the mapping of every low-level failure onto the
`workers.upstream.errors` tree, so callers never see a socket or library exception.
The `plain` transport's HTTP calls live in `workers.upstream.plain_transport`.

URLs may carry credentials (ChatHub's `sec_access_token`), so anything logged or put
in an error message goes through `redact_url` first. Library exceptions are never
chained as they are: websocket-client's `WebSocketBadStatusException` carries the
handshake's response headers (Set-Cookie) and body in its message, and RQ stores the
whole chain as the failed job's `exc_info`. A rejected handshake is chained as
`HandshakeStatus` (the status alone); the rest are not chained at all.

Nothing follows redirects: the websocket's `Cookie` header (the account) would be
re-sent to whatever host the `Location` names.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import websocket
from python_socks import ProxyError as SocksProxyError

from workers.upstream.cloudflare import challenge_error, verdict
from workers.upstream.errors import (
    Interrupted,
    ProtocolError,
    Throttled,
    Unauthorized,
    Unreachable,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

IDLE_CONTROL_FRAMES = 4  # pings/pongs read off a parked socket before it counts as busy
IDLE_FRAME_WAIT = 0.05  # seconds to finish reading a frame that began to arrive


class HandshakeStatus(Exception):
    """The HTTP status a websocket handshake was refused with, and nothing else it said."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def redact_url(url: str) -> str:
    """The URL without its query and credentials: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebSocketTransport:
    """One websocket connection with per-call receive deadlines.

    `recv` returns None when nothing arrived in time, so the caller keeps its own
    deadlines (first token, idle) and can poll for cancellation between slices.
    A close or reset raises `Interrupted`; the caller knows whether text had streamed.
    """

    def __init__(
        self,
        *,
        close_timeout: float = 0.5,
        logger: logging.Logger | None = None,
        proxy: str = "",
        ca_file: str | None = None,
    ) -> None:
        self._ws: websocket.WebSocket | None = None
        self._close_timeout = close_timeout
        self._log = logger or log
        self._where = ""
        self._options: dict[str, Any] = _proxy_options(proxy)
        # websocket-client speaks to an HTTP proxy in clear: never send an https:// one's credentials so.
        self._tls_proxy = urlsplit(proxy).scheme.lower() == "https"
        if ca_file:
            self._options["sslopt"] = {"ca_certs": ca_file}

    def open(self, url: str, *, headers: Mapping[str, str], timeout: float) -> None:
        """Connect and upgrade; raise `Unauthorized`/`Throttled`/`UpstreamTimeout`/`UpstreamError`.

        `Origin` and `Cookie` are handed to websocket-client separately because it
        would otherwise add an Origin of its own next to ours.
        """
        self._where = redact_url(url)
        if self._tls_proxy:
            raise UpstreamError(
                f"the plain transport cannot open the websocket to {self._where} through an https:// proxy "
                "(websocket-client speaks to proxies in clear); use UPSTREAM_TRANSPORT=browser, or an "
                "http://, socks5:// or socks5h:// proxy"
            )
        extra = {key: value for key, value in headers.items() if key.lower() not in ("origin", "cookie")}
        origin = next((v for k, v in headers.items() if k.lower() == "origin"), None)
        cookie = next((v for k, v in headers.items() if k.lower() == "cookie"), None)
        try:
            self._ws = websocket.create_connection(
                url,
                timeout=timeout,
                header=[f"{key}: {value}" for key, value in extra.items()],
                origin=origin,
                cookie=cookie or None,
                enable_multithread=False,
                # websocket-client's pure-Python UTF-8 check cost more CPU than the rest of a
                # turn; `recv` decodes text strictly (C) anyway and maps bad bytes below.
                skip_utf8_validation=True,
                # A redirect would re-send the account's Cookie header to the Location's host.
                redirect_limit=0,
                # A SOCKS proxy's own connect would otherwise wait python-socks' 60 s.
                http_proxy_timeout=timeout,
                **self._options,
            )
        except (websocket.WebSocketException, OSError, SocksProxyError) as exc:
            failure = _open_failure(exc, self._where, timeout)
            raise failure from failure.__cause__  # never the library's error: it may carry the URL
        self._log.debug("event=ws_open url=%s", self._where)

    def send(self, text: str) -> None:
        """Send one text message; a dead socket raises `Interrupted`."""
        if self._ws is None:
            raise Interrupted("the upstream websocket is not open")
        try:
            self._ws.send(text)
        except (websocket.WebSocketException, OSError) as exc:
            raise Interrupted(f"the upstream websocket failed while sending: {exc}") from exc

    def recv(self, timeout: float) -> str | None:
        """The next text message, or None if none arrived within `timeout` seconds."""
        if self._ws is None:
            raise Interrupted("the upstream websocket is not open")
        try:
            self._ws.settimeout(max(timeout, 0.001))
            data = self._ws.recv()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return None
        except UnicodeDecodeError as exc:
            raise ProtocolError("the upstream sent a text frame that is not UTF-8") from exc
        except websocket.WebSocketConnectionClosedException as exc:
            raise Interrupted("the upstream closed the websocket") from exc
        except (websocket.WebSocketException, OSError) as exc:
            raise Interrupted(f"the upstream websocket failed: {exc}") from exc
        if isinstance(data, bytes):
            return data.decode("utf-8", errors="replace")
        if data == "":  # websocket-client's way of reporting a close frame
            raise Interrupted("the upstream closed the websocket")
        return data

    def idle(self) -> bool:
        """Open with nothing unread: no frame and no close waits in TLS's buffer or the kernel's.

        A keep-alive ping that arrived while the socket was parked is answered (websocket-client
        sends the pong as it reads the ping) and is no reason to drop the socket, as libcurl does
        for the browser transport; any other frame, or a close, is.
        """
        ws = self._ws
        sock = ws.sock if ws is not None and ws.connected else None
        if ws is None or sock is None:
            return False
        try:
            for _ in range(IDLE_CONTROL_FRAMES):
                pending = getattr(sock, "pending", None)  # bytes TLS decrypted but nobody read
                if not (pending is not None and pending()) and not select.select([sock], [], [], 0)[0]:
                    return True
                ws.settimeout(IDLE_FRAME_WAIT)  # a ping's 2–127 bytes arrive together; never wait long
                opcode, _frame = ws.recv_data_frame(control_frame=True)
                if opcode not in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                    return False  # a frame (or a close) that belongs to no turn we could still answer
        except (websocket.WebSocketException, OSError, ValueError):
            return False
        return False

    def close(self) -> None:
        """Close the socket; safe to call twice and never raises, so it fits `finally`."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.close(timeout=self._close_timeout)
        except Exception:  # closing a broken socket must not mask the real error
            self._log.debug("event=ws_close_failed url=%s", self._where, exc_info=True)
        finally:
            try:
                ws.shutdown()  # type: ignore[no-untyped-call]  # websocket-client: unannotated
            except Exception:
                pass
        self._log.debug("event=ws_closed url=%s", self._where)


def _handshake_error(status: int, where: str) -> UpstreamError:
    if status in (401, 403):
        return Unauthorized(
            f"the upstream refused the websocket at {where} with HTTP {status}; "
            "refresh the Bing cookies in UPSTREAM_COOKIES"
        )
    if status == 429:
        return Throttled(f"the upstream rate-limited the websocket at {where} (HTTP 429)")
    return UpstreamError(f"the websocket handshake at {where} failed with HTTP {status}")


def _proxy_options(proxy: str) -> dict[str, Any]:
    """websocket-client's proxy options for `proxy`, with NO_PROXY overridden (the account's proxy always)."""
    if not proxy:
        return {}
    parts = urlsplit(proxy)
    scheme = parts.scheme.lower()  # http, or socks5/socks5h through python-socks (https: refused in `open`)
    options: dict[str, Any] = {
        "http_proxy_host": parts.hostname,
        "http_proxy_port": parts.port,
        "proxy_type": scheme,
        "http_no_proxy": ["\x00none"],  # an empty list would make websocket-client read NO_PROXY
    }
    if parts.username:
        # A URL carries them percent-encoded; requests and libcurl decode them, websocket-client does not.
        options["http_proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
    return options


def _open_failure(exc: BaseException, where: str, timeout: float) -> UpstreamError:
    """The error tree's name for a failed websocket open (`WebSocketTransport.open`)."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        if verdict(exc.status_code, exc.resp_headers or {}, exc.resp_body or b"") == "challenge":
            return challenge_error(exc.status_code, f"the websocket upgrade at {where}")
        failure = _handshake_error(exc.status_code, where)
        failure.__cause__ = HandshakeStatus(exc.status_code)
        return failure
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError)):
        return UpstreamTimeout(f"no websocket handshake from {where} within {timeout:g}s")
    if isinstance(exc, (websocket.WebSocketAddressException, socket.gaierror)):
        return Unreachable(f"cannot resolve the upstream host of {where}")
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"the upstream refused the connection to {where}")
    if isinstance(exc, SocksProxyError):  # not an OSError: refused credentials, a target it cannot reach
        return Unreachable(f"the account's SOCKS proxy would not open a tunnel to {where}: {exc}")
    if isinstance(exc, websocket.WebSocketException):
        if str(exc).startswith("Redirect"):
            return UpstreamError(
                f"the upstream answered the websocket handshake at {where} with a redirect, "
                "which is never followed (it would carry the account's cookies to another host)"
            )
        return UpstreamError(f"cannot open the websocket to {where}: {type(exc).__name__}")
    return Unreachable(f"cannot open the websocket to {where}: {type(exc).__name__}")
