"""The consumer Copilot client: the pure `/c/api/chat` dialect driven over the transport.

`CopilotClient.create_conversation` makes a server-side conversation (`POST
/c/api/conversations`) and returns its persistable `CopilotHandle`;
`CopilotClient.stream_turn` runs one turn on the account's parked websocket (or a fresh
one, parked afterwards: `socket_park`) and yields dialect-neutral events. The client
owns the account side of a turn: the session and its cookies, image uploads, opening the
socket, building the preamble and the held `send`, and turning a refusal into the right
error. What then crosses the socket, and the deadlines that bound it, live in
`copilot_exchange.TurnExchange`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from typing import Any

from service.runtime import trace
from workers.upstream import copilot
from workers.upstream.context import TurnImage, TurnInput
from workers.upstream.copilot_conversation import CopilotHandle, parse_create_response
from workers.upstream.copilot_decode import CopilotDecoder
from workers.upstream.copilot_exchange import CONNECTED_WAIT, DONE_DRAIN, TurnExchange
from workers.upstream.copilot_failures import InvalidEvent, refused_unheard
from workers.upstream.copilot_session import AccountSession, raise_for_gate
from workers.upstream.errors import (
    ConversationExpired,
    Unauthorized,
    UpstreamError,
)
from workers.upstream.events import Event
from workers.upstream.socket_park import SocketSlot
from workers.upstream.transport import redact_url
from workers.upstream.wire import Socket, Transport

log = logging.getLogger(__name__)

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
# B1.1 [U]: g4f, OmniRoute and the JS/Go bots send `Authorization: Bearer` on REST; the
# 2026 Windows-Copilot-API driver found REST must be cookie-only (Bearer → 401) and
# only the websocket carries the token. We follow the newer report; flip to disagree.
# The same question and the same answer hold for `POST /c/api/attachments` (image upload).
REST_BEARER = False
ATTACHMENTS_BEARER = REST_BEARER


def _new_id() -> str:
    """A uuid4: each socket's `clientSessionId` (B1.2: "new per socket")."""
    return str(uuid.uuid4())


class CopilotClient:
    """Talks to Copilot as one account (one cookie string, optionally an access token)."""

    def __init__(
        self,
        *,
        # where
        base_url: str = copilot.ORIGIN,
        # who
        cookies: str = "",
        access_token: str = "",
        user_agent: str = USER_AGENT,
        on_cookies: Callable[[str], None] | None = None,
        # how long
        connect_timeout: float = 10.0,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        connected_wait: float = CONNECTED_WAIT,
        done_drain: float = DONE_DRAIN,
        # collaborators
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_id,
        transport: Transport | None = None,
        transport_factory: Callable[[], Socket] | None = None,
        sockets: SocketSlot | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._access_token = access_token
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._connected_wait = connected_wait
        self._done_drain = done_drain
        self._clock = clock
        self._new_id = new_id
        self._log = logger or log
        # The account's jar, user agent and anonymous session (`copilot_session`); every
        # Set-Cookie lands there and is reported through `on_cookies`.
        self._account = AccountSession(
            base_url=base_url,
            cookies=cookies,
            access_token=access_token,
            user_agent=user_agent,
            on_cookies=on_cookies,
            rest_bearer=REST_BEARER,
            timeout=connect_timeout,
            transport=transport,
            clock=clock,
            logger=self._log,
        )
        # The account's REST calls and its chat socket share one transport (one identity).
        self._transport_factory = transport_factory or self._account.transport.socket
        # The account's idle socket between turns (`socket_park`); None = a socket per turn.
        self._sockets = sockets

    def create_conversation(self, *, account: str = "") -> CopilotHandle:
        """Create a server-side conversation; `account` is recorded so later turns use the same cookies.

        An anonymous account first gets its session (`AccountSession.ensure_ready`); if
        Copilot refuses that session, it is started afresh once.
        """
        for attempt in (1, 2):
            self._account.ensure_ready()
            status, response_headers, body = self._account.request("POST", copilot.CREATE_PATH, body=b"")
            raise_for_gate(status, response_headers, "conversation create", body)
            if status == 401 and attempt == 1 and self._account.anonymous and self._account.has_session:
                self._account.forget_session()
                continue
            break
        handle = parse_create_response(
            status, response_headers, body, account=account, now=self._clock()
        )
        self._log.info(
            "event=copilot_conversation_created account=%s anonymous=%s",
            account,
            self._account.anonymous,
        )
        return handle

    def probe(self) -> None:
        """One cheap REST call that raises if the account needs attention (`AccountSession.probe`)."""
        self._account.probe()

    def stream_turn(
        self, handle: CopilotHandle, turn: TurnInput, *, should_stop: Callable[[], bool] = lambda: False
    ) -> Generator[Event, None, None]:
        """Run one turn and yield its events, ending with `Done` (or nothing if stopped).

        The turn goes out on the account's parked socket when it has one (`socket_park`: no
        upgrade, no preamble, just the `send`), else on a fresh socket. A parked socket that
        closes before saying anything, or answers the `send` with `invalid-event` alone, is
        replaced once (`refused_unheard`): the turn is never accepted twice. On success
        `handle.turns` is advanced before `Done` is yielded, so a consumer that stops at `Done`
        still persists the right state. A socket that ended its turn cleanly is parked.
        """
        decoder = self._decoder(handle, turn)
        context = copilot.turn_context(turn, fresh=handle.fresh)
        # The socket's identity is its URL but for its own clientSessionId (a new uuid4 per socket,
        # B1.2, which a parked socket keeps), its headers and its transport (`socket_park`).
        url = self._chat_url(context, client_session_id="")
        exchange: TurnExchange | None = None
        try:
            self._account.ensure_ready()
            images = [self._attach(handle, image) for image in turn.images]
            held_send = copilot.send(handle.conversation_id, turn.text, turn.mode, context, images)
            headers = self._account.socket_headers()
            slot = self._sockets
            identity = slot.identity(url, headers) if slot is not None else ""
            parked = slot.take(identity) if slot is not None else None
            if parked is not None:
                exchange = self._exchange(parked)
                try:
                    yield from self._exchanged(exchange, decoder, handle, held_send, should_stop, identity)
                    return
                except UpstreamError as exc:
                    if not refused_unheard(exc, exchange.heard):
                        raise
                    self._log.info(
                        "event=copilot_parked_socket_%s action=reopen",
                        "refused" if isinstance(exc, InvalidEvent) else "closed",
                    )
                    decoder = self._decoder(handle, turn)  # it read the refusal: start clean
            exchange = self._exchange(self._transport_factory())
            url = self._chat_url(context, client_session_id=self._new_id())
            self._open(exchange.transport, url, headers, handle.account)
            trace.mark("ws_open")
            yield from self._exchanged(
                exchange, decoder, handle, held_send, should_stop, identity, preamble=True
            )
        except UpstreamError as exc:
            if isinstance(exc, InvalidEvent):
                self._log.warning(
                    "event=copilot_invalid_event url=%s frames=%s",
                    redact_url(url),
                    exchange.frames.dump() if exchange is not None else "",
                )
                if not handle.fresh and not decoder.text:
                    # On a conversation that worked before, the usual cause is that Copilot no
                    # longer knows it (deleted in the account's UI, expired server-side, or a
                    # different cookie): the turn runner rolls over to a new, seeded one.
                    self._log.info("event=copilot_conversation_forgotten turns=%d", handle.turns)
                    raise ConversationExpired(
                        "Copilot no longer accepts this conversation (invalid-event on a continued "
                        "conversation)"
                    ) from exc
            self._log.info("event=copilot_turn_failed error=%s", type(exc).__name__)
            refused = self._account.refused(exc, account=handle.account)
            if refused is not exc:
                raise refused from exc  # an expired token, or an anonymous session to start afresh
            raise

    def _decoder(self, handle: CopilotHandle, turn: TurnInput) -> CopilotDecoder:
        return CopilotDecoder(account=handle.account, mode=turn.mode, clock=self._clock, logger=self._log)

    def _chat_url(self, context: Mapping[str, Any], *, client_session_id: str) -> str:
        return copilot.chat_url(
            self._base_url,
            client_session_id=client_session_id,
            access_token=self._access_token,
            with_page_context=bool(context),
        )

    def _exchange(self, transport: Socket) -> TurnExchange:
        return TurnExchange(
            transport,
            secrets=self._secrets(),
            first_token_timeout=self._first_token_timeout,
            idle_timeout=self._idle_timeout,
            connected_wait=self._connected_wait,
            done_drain=self._done_drain,
            logger=self._log,
        )

    def _exchanged(
        self,
        exchange: TurnExchange,
        decoder: CopilotDecoder,
        handle: CopilotHandle,
        held_send: str,
        should_stop: Callable[[], bool],
        identity: str,
        *,
        preamble: bool = False,
    ) -> Generator[Event, None, None]:
        """The turn on an open socket (`TurnExchange.turn`); parked after `Done`, else closed."""
        try:
            yield from exchange.turn(decoder, handle, held_send, should_stop, preamble=preamble)
        finally:
            if exchange.reusable and self._sockets is not None:
                self._sockets.put(identity, exchange.transport)
            else:
                exchange.transport.close()

    def _attach(self, handle: CopilotHandle, image: TurnImage) -> str:
        """The attachment URL of `image`: uploaded once per upstream conversation (`handle.images`)."""
        known = handle.images.get(image.digest)
        if known:
            self._log.info("event=copilot_image_reused bytes=%d", len(image.data))
            return known
        status, headers, body = self._account.request(
            "POST",
            copilot.ATTACHMENTS_PATH,
            body=image.data,
            content_type=image.mime,
            bearer=ATTACHMENTS_BEARER,
        )
        raise_for_gate(status, headers, "image upload", body)
        if status in (401, 403):
            raise Unauthorized(
                f"Copilot refused the image upload with HTTP {status}; {copilot.CREDENTIALS_HINT}"
            )
        url = copilot.parse_attachment_response(status, body)
        handle.remember_image(image.digest, url)
        self._log.info("event=copilot_image_uploaded bytes=%d mime=%s", len(image.data), image.mime)
        return url

    def _secrets(self) -> list[str]:
        """Values that must never reach a log: the token, the cookie string and each cookie value."""
        return self._account.secret_values()

    def _open(self, transport: Socket, url: str, headers: Mapping[str, str], account: str) -> None:
        # Origin goes through the transport, which hands it to websocket-client separately so
        # it is sent exactly once (the library adds its own next to a header-list Origin).
        try:
            transport.open(url, headers=headers, timeout=self._connect_timeout)
        except Unauthorized as exc:
            status = getattr(exc.__cause__, "status_code", "401/403")
            raise Unauthorized(
                f"Copilot refused the websocket for account #{account} with HTTP {status}; an expired or "
                f"wrong-audience COPILOT_ACCESS_TOKEN is the usual cause, else {copilot.CREDENTIALS_HINT}"
            ) from exc

