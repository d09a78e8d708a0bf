"""The Bing Chat (ChatHub) client: the pure dialect driven over the transport.

`BingClient.create_conversation` makes an upstream conversation and returns its
persistable `BingHandle`; `BingClient.stream_turn` runs one turn on a fresh websocket
(the norm for ChatHub clients, A1.3) and yields dialect-neutral events. The client
owns the account side of a turn: its cookies and headers, the kblob image upload, the
socket URL, building the invocation and advancing the handle after `Done`. What then
crosses the socket, and the deadlines that bound it, live in
`chathub_exchange.TurnExchange`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Generator
from datetime import datetime
from urllib.parse import quote, urlsplit

from service.runtime import trace
from workers.upstream import chathub, chathub_conversation
from workers.upstream.chathub_conversation import BingHandle
from workers.upstream.chathub_decode import ChatHubDecoder
from workers.upstream.chathub_exchange import TurnExchange
from workers.upstream.cloudflare import raise_for_challenge
from workers.upstream.context import TurnImage, TurnInput
from workers.upstream.errors import Unauthorized, UpstreamError
from workers.upstream.events import Done, Event
from workers.upstream.wire import Socket, Transport

log = logging.getLogger(__name__)

BUNDLE_VERSION = "1.1816.0"
ORIGIN = "https://www.bing.com"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"
)
PING_INTERVAL = 15.0  # node-chatgpt-api's keepalive; Bing drops sockets silent for ~40 s


def _new_id() -> str:
    return str(uuid.uuid4())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _local_timestamp(epoch: float) -> str:
    """Local ISO-8601 time with offset, as a browser sends in `message.timestamp`."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


class BingClient:
    """Talks to one Bing account (one cookie string) over ChatHub."""

    def __init__(
        self,
        *,
        # where
        create_url: str,
        chathub_url: str,
        # who
        cookies: str = "",
        # how long
        connect_timeout: float = 10.0,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        ping_interval: float = PING_INTERVAL,
        # collaborators
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_id,
        transport: Transport | None = None,
        transport_factory: Callable[[], Socket] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._create_url = create_url
        self._chathub_url = chathub_url
        self._cookies = cookies
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._ping_interval = ping_interval
        self._clock = clock
        self._new_id = new_id
        if transport is None:
            from workers.upstream.copilot_browser import identity_for
            from workers.upstream.plain_transport import PlainTransport

            transport = PlainTransport(identity=identity_for(USER_AGENT))
        self._transport = transport
        self._transport_factory = transport_factory or transport.socket
        self._log = logger or log

    def create_conversation(self, *, account: str = "") -> BingHandle:
        """Create an upstream conversation; `account` is recorded so resumes use the same cookies."""
        url = self._create_url
        if "?" not in url:
            url += f"?bundleVersion={BUNDLE_VERSION}"
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Language": "en-US,en;q=0.9",
            "Referer": f"{ORIGIN}/search?q=Bing+AI&showconv=1",
            "x-ms-client-request-id": self._new_id(),
        }
        if self._cookies:
            headers["Cookie"] = self._cookies
        reply = self._transport.request("GET", url, headers=headers, timeout=self._connect_timeout)
        status, response_headers, body = reply.status, reply.headers, reply.body
        raise_for_challenge(status, response_headers, body, "conversation create", account)
        handle = chathub_conversation.parse_create_response(
            status, response_headers, body, now=self._clock(), account=account
        )
        self._log.info(
            "event=bing_conversation_created account=%s anonymous=%s",
            account,
            "BingProdUnAuthenticatedUsers" in handle.conversation_id,
        )
        return handle

    def stream_turn(
        self, handle: BingHandle, turn: TurnInput, *, should_stop: Callable[[], bool] = lambda: False
    ) -> Generator[Event, None, None]:
        """Run one turn and yield its events, ending with `Done` (or nothing if stopped).

        On success the handle is updated in place (next invocation, turn counters,
        expiry) before `Done` is yielded, so a consumer that stops at `Done` still
        persists the right state. The socket is closed on every exit path.
        """
        decoder = ChatHubDecoder(account=handle.account)
        transport = self._transport_factory()
        exchange = TurnExchange(
            transport,
            connect_timeout=self._connect_timeout,
            first_token_timeout=self._first_token_timeout,
            idle_timeout=self._idle_timeout,
            ping_interval=self._ping_interval,
            logger=self._log,
        )
        started = time.monotonic()
        try:
            image_url = self._attach(handle, turn.images[0], turn.tone) if turn.images else None
            transport.open(
                self._socket_url(handle), headers=self._socket_headers(), timeout=self._connect_timeout
            )
            trace.mark("ws_open")
            pending = exchange.handshake(should_stop)
            if pending is None:
                return
            trace.mark("handshake")
            invocation = chathub.build_invocation(
                handle,
                turn,
                request_id=self._new_id(),
                trace_id=self._new_id().replace("-", ""),
                timestamp=_local_timestamp(self._clock()),
                image_url=image_url,
            )
            exchange.send_turn(invocation)
            trace.mark("send")
            for event in exchange.read(decoder, pending, should_stop):
                if isinstance(event, Done):
                    self._advance(handle, decoder)
                    self._log.info(
                        "event=bing_turn_done invocation=%d chars=%d finish_reason=%s seconds=%.2f",
                        handle.invocation,
                        len(event.text),
                        event.finish_reason,
                        time.monotonic() - started,
                    )
                yield event
                if isinstance(event, Done):
                    return
        except UpstreamError as exc:
            self._log.info("event=bing_turn_failed error=%s", type(exc).__name__)
            raise
        finally:
            transport.close()

    def _attach(self, handle: BingHandle, image: TurnImage, tone: str) -> str:
        """The blob URL of `image`: uploaded to kblob once per upstream conversation (`handle.images`)."""
        known = handle.images.get(image.digest)
        if known:
            return known
        body, content_type = chathub.kblob_body(
            image.data,
            conversation_id=handle.conversation_id,
            tone=tone,
            boundary=self._new_id().replace("-", ""),
        )
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": content_type,
            "Referer": f"{ORIGIN}/search?q=Bing+AI&showconv=1",
        }
        if self._cookies:
            headers["Cookie"] = self._cookies
        reply = self._transport.request(
            "POST", _origin(self._create_url) + chathub.KBLOB_PATH, headers=headers, body=body,
            timeout=self._connect_timeout,
        )
        status, answer = reply.status, reply.body
        raise_for_challenge(status, reply.headers, answer, "image upload", handle.account)
        if status in (401, 403):
            raise Unauthorized(
                f"Bing refused the image upload for account #{handle.account} with HTTP {status}"
            )
        url = chathub.parse_kblob_response(status, answer)
        handle.images[image.digest] = url
        self._log.info("event=bing_image_uploaded bytes=%d", len(image.data))
        return url

    def _socket_url(self, handle: BingHandle) -> str:
        if not handle.encrypted_signature:
            return self._chathub_url  # pre-Oct-2023 conversations carry no token
        joiner = "&" if "?" in self._chathub_url else "?"
        return f"{self._chathub_url}{joiner}sec_access_token={quote(handle.encrypted_signature, safe='')}"

    def _socket_headers(self) -> dict[str, str]:
        headers = {
            "Origin": ORIGIN,
            "User-Agent": USER_AGENT,
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
        }
        if self._cookies:
            headers["Cookie"] = self._cookies
        return headers

    def _advance(self, handle: BingHandle, decoder: ChatHubDecoder) -> None:
        """Record a completed turn on the handle so the next one resumes correctly."""
        handle.invocation += 1
        if decoder.limits is not None:
            handle.turns_used, handle.turns_max = decoder.limits.used, decoder.limits.max
        expires_at = chathub_conversation.parse_expiry(decoder.expiry_time)
        if expires_at is not None:
            handle.expires_at = expires_at
