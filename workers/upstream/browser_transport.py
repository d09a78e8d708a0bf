"""The `browser` transport: curl_cffi speaking as the account's browser (UPSTREAM_TRANSPORT=browser).

Every REST call and the chat websocket go through libcurl-impersonate with the account's
curl_cffi profile: the ClientHello, ALPN and HTTP/2 settings of that browser, its header
order (`browser_headers`), the account's UA, hints and language, and the account's proxy
for every connection (CURLOPT_NOPROXY="" so NO_PROXY cannot route around it). Redirects
are never followed; curl_cffi's own default headers are off (the identity's are sent
instead); TLS is verified against the defaults plus UPSTREAM_CA_BUNDLE.

Cooperative in the gevent worker (`cooperative`): blocking libcurl calls (a REST call, the
websocket handshake) run in the hub's thread pool; a websocket read polls libcurl without
blocking and waits for the socket cooperatively. Each account has its own curl_cffi
session (connections are reused within it, never across accounts) whose cookie jar is
emptied after every answer: cookies travel only in the account's own `Cookie` header.
Library errors are mapped onto `workers.upstream.errors`, never chained (their messages can
carry URLs with tokens).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

from curl_cffi.const import CurlECode, CurlOpt, CurlWsFlag
from curl_cffi.curl import CurlError
from curl_cffi.requests import Response, Session, WebSocket
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from curl_cffi.requests.exceptions import DNSError, RequestException, Timeout
from curl_cffi.requests.websockets import WebSocketClosed, WebSocketError, WebSocketTimeout

from service.accounts.identity import Identity
from workers.upstream.browser_headers import ACCEPT_ENCODING, compose, engine
from workers.upstream.cloudflare import challenge_error, verdict
from workers.upstream.cooperative import offload, wait_readable
from workers.upstream.curl_socket import lean_websocket, settle
from workers.upstream.errors import Interrupted, ProtocolError, Unreachable, UpstreamError, UpstreamTimeout
from workers.upstream.transport import _handshake_error, redact_url
from workers.upstream.wire import RETRY_BACKOFF, Reply, ca_bundle, retrying

log = logging.getLogger(__name__)

_SESSIONS: dict[tuple[str, str, str, str], Session[Response]] = {}
_SESSIONS_LOCK = threading.Lock()
MAX_SESSIONS = 256
# libcurl's receive buffer (CURLOPT_BUFFERSIZE, 16 KiB by default) lives as long as the
# handle. A websocket reads it only for the upgrade's answer (frames go through libcurl's
# own websocket buffers), so 4 KiB is plenty and saves ~12 KiB of heap per open socket.
# It changes only how much libcurl asks the kernel for at once, never a byte on the wire.
HANDSHAKE_BUFFER = 4 * 1024


class BrowserTransport:
    """One account's curl_cffi transport (see the module docstring)."""

    name = "browser"

    def __init__(self, *, identity: Identity, proxy: str = "", ca_file: str = "", key: str = "") -> None:
        _quiet_cookie_warnings()
        self.identity = identity
        self._proxy = proxy
        self._verify: str | bool = ca_bundle(ca_file) or True
        self._key = key

    @property
    def profile(self) -> str:
        return self.identity.impersonate

    def options(self, url: str) -> dict[str, Any]:
        """What every call of this account passes to curl_cffi."""
        options: dict[str, Any] = {
            "impersonate": self.identity.impersonate,
            "default_headers": False,
            "allow_redirects": False,
            "verify": self._verify,
            "accept_encoding": ACCEPT_ENCODING[engine(self.identity)],
        }
        if url.startswith(("http://", "ws://")):
            options["http_version"] = "v1"  # no browser offers h2c: plain http stays HTTP/1.1
        if self._proxy:
            options["proxy"] = self._proxy
            options["curl_options"] = {CurlOpt.NOPROXY: ""}
        return options

    def _session(self) -> Session[Response]:
        cache_key = (self._key, self.identity.impersonate, self._proxy, str(self._verify))
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(cache_key)
            if session is None:
                if len(_SESSIONS) >= MAX_SESSIONS:
                    _SESSIONS.pop(next(iter(_SESSIONS))).close()
                # CURLOPT_NOPROXY="": libcurl would otherwise let NO_PROXY route around the account's proxy.
                extra = {CurlOpt.NOPROXY: ""} if self._proxy else {}
                session = _SESSIONS[cache_key] = Session(trust_env=False, curl_options=extra)
            return session

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
    ) -> Reply:
        """One call as the account's browser; 5xx and connection failures are retried briefly."""
        where = redact_url(url)
        session = self._session()
        ordered = compose(self.identity, headers, kind)
        options = self.options(url)
        options.pop("curl_options", None)  # the session carries them

        def perform() -> Reply:
            try:
                response = session.request(
                    cast(Any, method), url, headers=ordered, data=body, timeout=timeout, **options
                )
            finally:
                session.cookies.clear()
            lines = tuple(line for line in response.headers.get_list("set-cookie") if line)
            # curl_cffi's Headers: case-insensitive like requests' (values are never None on an answer).
            headers = cast("Mapping[str, str]", response.headers)
            return Reply(response.status_code, headers, response.content, lines)

        def once() -> Reply:
            try:
                return offload(perform)
            except Timeout:
                raise UpstreamTimeout(f"no answer from {where} within {timeout:g}s") from None

        return retrying(
            once,
            where,
            retries=retries,
            backoff=RETRY_BACKOFF,
            transient=(RequestException, CurlError),
            unreachable=(CurlConnectionError, DNSError),
        )

    def socket(self) -> CurlSocket:
        return CurlSocket(self)


class CurlSocket:
    """The chat websocket over curl_cffi; `recv` returns None when nothing arrived in time."""

    def __init__(self, transport: BrowserTransport, *, logger: logging.Logger | None = None) -> None:
        self._transport = transport
        self._ws: WebSocket | None = None
        self._fd = -1
        self._where = ""
        self._log = logger or log

    def open(self, url: str, *, headers: Mapping[str, str], timeout: float) -> None:
        """Connect and upgrade; a refusal maps as the plain transport's, a Cloudflare page to its error."""
        self._where = redact_url(url)
        head: list[bytes] = []
        options = self._transport.options(url)
        extra = options.setdefault("curl_options", {})
        extra[CurlOpt.HEADERFUNCTION] = _header_sink(head)
        extra[CurlOpt.BUFFERSIZE] = HANDSHAKE_BUFFER
        ws = lean_websocket()
        ordered = compose(self._transport.identity, headers, "websocket")
        try:
            offload(lambda: ws.connect(url, headers=ordered, timeout=timeout, **options))
        except CurlError as exc:
            raise self._refusal(exc, head, timeout) from None
        head.clear()  # the upgrade's answer was read; the handle keeps the sink for its lifetime
        self._fd = settle(ws)
        self._ws = ws
        self._log.debug("event=ws_open url=%s transport=browser", self._where)

    def _refusal(self, exc: CurlError, head: list[bytes], timeout: float) -> UpstreamError:
        status, response_headers = _status_and_headers(head)
        if status and status != 101:
            if verdict(status, response_headers) == "challenge":
                return challenge_error(status, f"the websocket upgrade at {self._where}")
            return _handshake_error(status, self._where)
        if exc.code == CurlECode.OPERATION_TIMEDOUT:
            return UpstreamTimeout(f"no websocket handshake from {self._where} within {timeout:g}s")
        if exc.code in (CurlECode.COULDNT_RESOLVE_HOST, CurlECode.COULDNT_RESOLVE_PROXY):
            return Unreachable(f"cannot resolve the upstream host of {self._where}")
        if exc.code == CurlECode.COULDNT_CONNECT:
            return Unreachable(f"the upstream refused the connection to {self._where}")
        return UpstreamError(f"cannot open the websocket to {self._where}: curl error {int(exc.code)}")

    def send(self, text: str) -> None:
        """Send one text message; a dead socket raises `Interrupted`."""
        if self._ws is None:
            raise Interrupted("the upstream websocket is not open")
        try:
            self._ws.send(text.encode(), CurlWsFlag.TEXT, timeout=10.0)
        except (CurlError, OSError) as exc:
            raise Interrupted(
                f"the upstream websocket failed while sending: curl error {getattr(exc, 'code', '?')}"
            ) from None

    def recv(self, timeout: float) -> str | None:
        """The next text message, or None if none arrived within `timeout` seconds (waiting cooperatively)."""
        ws = self._ws
        if ws is None:
            raise Interrupted("the upstream websocket is not open")
        deadline = time.monotonic() + max(timeout, 0.001)
        while True:
            try:
                data, flags = ws.recv(timeout=0)
            except WebSocketTimeout:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not wait_readable(self._fd, remaining):
                    return None
                continue
            except WebSocketClosed:
                raise Interrupted("the upstream closed the websocket") from None
            except (WebSocketError, CurlError, OSError) as exc:
                raise Interrupted(
                    f"the upstream websocket failed: curl error {getattr(exc, 'code', '?')}"
                ) from None
            if flags & CurlWsFlag.CLOSE:
                raise Interrupted("the upstream closed the websocket")
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                if flags & CurlWsFlag.TEXT:
                    raise ProtocolError("the upstream sent a text frame that is not UTF-8") from None
                return data.decode("utf-8", errors="replace")

    def idle(self) -> bool:
        """Open with nothing unread: one non-blocking read finds no frame and no close."""
        ws = self._ws
        if ws is None:
            return False
        for _ in range(4):  # a keep-alive ping (libcurl answers it) is no reason to drop the socket
            try:
                _data, flags = ws.recv(timeout=0)
            except WebSocketTimeout:
                return True
            except Exception:  # closed or broken: not usable, whatever the library says
                return False
            if not flags & (CurlWsFlag.PING | CurlWsFlag.PONG):
                return False  # a frame was waiting: it belongs to no turn we could still answer
        return False

    def close(self) -> None:
        """Close the socket; safe to call twice and never raises, so it fits `finally`."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.close(timeout=0.5)
        except Exception:  # closing a broken socket must not mask the real error
            self._log.debug("event=ws_close_failed url=%s", self._where, exc_info=True)
        self._log.debug("event=ws_closed url=%s", self._where)


def _status_and_headers(head: list[bytes]) -> tuple[int, dict[str, str]]:
    """The last response's status and headers from the raw header lines curl saw."""
    status, headers = 0, dict[str, str]()
    for raw in head:
        line = raw.decode("latin-1").strip()
        if line.startswith("HTTP/"):
            parts = line.split()
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            headers = {}
        elif ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def _header_sink(head: list[bytes]) -> Callable[[bytes], int]:
    """A CURLOPT_HEADERFUNCTION keeping the raw header lines of the upgrade's answer."""

    def keep(line: bytes) -> int:
        head.append(bytes(line))
        return len(line)

    return keep


def _quiet_cookie_warnings() -> None:
    """curl_cffi warns on every `__Host-` cookie it files in its (unused, emptied) jar: not news."""
    warnings.filterwarnings("ignore", message="`host` changed to True", category=Warning)
