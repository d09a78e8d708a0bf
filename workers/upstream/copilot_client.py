"""The consumer Copilot client: the pure `/c/api/chat` dialect driven over the transport.

`CopilotClient.create_conversation` makes a server-side conversation (`POST
/c/api/conversations`) and returns its persistable `CopilotHandle`;
`CopilotClient.stream_turn` runs one turn on a fresh websocket and yields
dialect-neutral events. This is where the turn's choreography and deadlines live:
wait briefly for `connected` (2026 servers reject frames sent before it), send the
preamble and the `send` exactly once, answer a proof-of-work challenge and re-send the
held `send`, drain late suggestions after `done`, and poll for cancellation so a client
that went away frees the worker within half a second.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any

from service.runtime import trace
from workers.upstream import copilot
from workers.upstream.challenges import solve_challenge
from workers.upstream.context import TurnImage, TurnInput
from workers.upstream.copilot import CopilotHandle
from workers.upstream.copilot_decode import Challenge, CopilotDecoder, InvalidEvent
from workers.upstream.copilot_session import AccountSession, raise_for_gate
from workers.upstream.errors import (
    ConversationExpired,
    Interrupted,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from workers.upstream.events import Done, Event
from workers.upstream.transport import redact_url
from workers.upstream.wire import Socket, Transport

log = logging.getLogger(__name__)

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
STOP_POLL = 0.5  # how long a cancelled turn may keep the worker
CONNECTED_WAIT = 2.0  # how long to wait for a 2026 server's `connected` before speaking anyway
DONE_DRAIN = 1.0  # g4f's wait for `suggestedFollowups` after `done` (B3.2)
FRAME_MEMORY = 8  # frames kept to explain an `invalid-event`
# B1.1 [U]: g4f, OmniRoute and the JS/Go bots send `Authorization: Bearer` on REST; the
# 2026 Windows-Copilot-API driver found REST must be cookie-only (Bearer → 401) and
# only the websocket carries the token. We follow the newer report; flip to disagree.
# The same question and the same answer hold for `POST /c/api/attachments` (image upload).
REST_BEARER = False
ATTACHMENTS_BEARER = REST_BEARER


def _new_id() -> str:
    return str(uuid.uuid4())


# Frame fields whose text is protocol, not the user's words or the answer's; every other
# string in a remembered frame is replaced by its length.
_FRAME_WORDS = frozenset({"event", "id", "type", "mode", "method", "errorCode", "messageId", "partId"})


def _frame_shape(frame: str) -> str:
    """The frame with the text of every field outside `_FRAME_WORDS` replaced by `<N chars>`."""

    def shape(value: object, key: str = "") -> object:
        if isinstance(value, dict):
            return {k: shape(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v, key) for v in value]
        if isinstance(value, str) and key not in _FRAME_WORDS:
            return f"<{len(value)} chars>"
        return value

    try:
        return json.dumps(shape(json.loads(frame)), separators=(",", ":"))
    except ValueError:
        return f"<{len(frame)} chars, not one JSON object>"


class _FrameLog:
    """The last few frames both ways, as shapes, to show what drew an `invalid-event`.

    Only the protocol's words are kept: user prompts, injected history and answers
    never reach the log (the secrets pass is kept as a second line of defence).
    """

    def __init__(self, secrets: list[str]) -> None:
        self._frames: collections.deque[str] = collections.deque(maxlen=FRAME_MEMORY)
        self._secrets = secrets

    def add(self, direction: str, frame: str) -> None:
        self._frames.append(f"{direction} {copilot.redact_frame(_frame_shape(frame), self._secrets)}")

    def dump(self) -> str:
        return " | ".join(self._frames)


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
        client_session_id: str | None = None,
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
        # One clientSessionId per browser session (B5b): the account's, when the pool gives one.
        self._client_session_id = client_session_id or new_id()

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
        handle = copilot.parse_create_response(
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

        On success `handle.turns` is advanced before `Done` is yielded, so a consumer
        that stops at `Done` still persists the right state. The socket is closed on
        every exit path.
        """
        decoder = CopilotDecoder(account=handle.account, mode=turn.mode, clock=self._clock, logger=self._log)
        frames = _FrameLog(self._secrets())
        stream = copilot.EventStream()
        context = copilot.turn_context(turn, fresh=handle.fresh)
        url = copilot.chat_url(
            self._base_url,
            client_session_id=self._client_session_id,
            access_token=self._access_token,
            with_page_context=bool(context),
        )
        transport = self._transport_factory()
        started = time.monotonic()
        try:
            self._account.ensure_ready()
            images = [self._attach(handle, image) for image in turn.images]
            held_send = copilot.send(handle.conversation_id, turn.text, turn.mode, context, images)
            self._open(transport, url, handle.account)
            trace.mark("ws_open")
            first = self._await_connected(transport, stream, frames, should_stop)
            if first is None:
                return
            early = decoder.feed_message(first)  # a server may refuse before we speak
            challenge = decoder.take_challenge()
            if challenge is not None:
                self._answer(transport, frames, challenge, resend=None)
            for frame in (copilot.set_options(), copilot.report_local_consents(), held_send):
                self._send(transport, frames, frame)
            trace.mark("send")
            for event in self._read(transport, stream, decoder, frames, held_send, early, should_stop):
                if isinstance(event, Done):
                    handle.turns += 1
                    self._log.info(
                        "event=copilot_turn_done turns=%d chars=%d image=%s seconds=%.2f",
                        handle.turns,
                        len(event.text),
                        decoder.image is not None,
                        time.monotonic() - started,
                    )
                yield event
                if isinstance(event, Done):
                    return
        except UpstreamError as exc:
            if isinstance(exc, InvalidEvent):
                self._log.warning(
                    "event=copilot_invalid_event url=%s frames=%s", redact_url(url), frames.dump()
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
        finally:
            transport.close()

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

    def _open(self, transport: Socket, url: str, account: str) -> None:
        # Origin goes through the transport, which hands it to websocket-client separately so
        # it is sent exactly once (the library adds its own next to a header-list Origin).
        try:
            transport.open(url, headers=self._account.socket_headers(), timeout=self._connect_timeout)
        except Unauthorized as exc:
            status = getattr(exc.__cause__, "status_code", "401/403")
            raise Unauthorized(
                f"Copilot refused the websocket for account #{account} with HTTP {status}; an expired or "
                f"wrong-audience COPILOT_ACCESS_TOKEN is the usual cause, else {copilot.CREDENTIALS_HINT}"
            ) from exc

    def _send(self, transport: Socket, frames: _FrameLog, frame: str) -> None:
        frames.add("C→", frame)
        try:
            transport.send(frame)
        except Interrupted as exc:
            raise UpstreamError("Copilot closed the connection without replying") from exc

    def _await_connected(
        self,
        transport: Socket,
        stream: copilot.EventStream,
        frames: _FrameLog,
        should_stop: Callable[[], bool],
    ) -> list[dict[str, Any]] | None:
        """Wait up to `connected_wait` for the server's first event; return what came besides `connected`.

        2026 servers speak first with `connected` and answer earlier frames with
        `invalid-event`; older servers never send it, so silence means "go ahead"
        (B1.3). None means `should_stop` fired while waiting.
        """
        deadline = time.monotonic() + self._connected_wait
        while True:
            if should_stop():
                self._log.info("event=copilot_turn_cancelled stage=connect")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log.debug("event=copilot_no_connected waited=%.2f", self._connected_wait)
                return []
            try:
                message = transport.recv(min(STOP_POLL, remaining))
            except Interrupted as exc:
                raise UpstreamError("Copilot closed the connection before the turn started") from exc
            if message is None:
                continue
            frames.add("S→", message)
            events = stream.feed(message)
            if events:
                return [event for event in events if event.get("event") != "connected"]

    def _answer(
        self, transport: Socket, frames: _FrameLog, challenge: Challenge, *, resend: str | None
    ) -> None:
        """Reply to a proof-of-work challenge, then re-send the held `send` (B7.4)."""
        started = time.monotonic()
        token = solve_challenge(challenge.method, challenge.parameter)
        self._log.info(
            "event=copilot_challenge_answered method=%s seconds=%.3f",
            challenge.method,
            time.monotonic() - started,
        )
        self._send(transport, frames, copilot.challenge_response(challenge.method, token, challenge.id))
        if resend is not None:
            self._send(transport, frames, resend)

    def _silence(self, *, answering: bool) -> UpstreamTimeout:
        """The timeout for a Copilot that never started answering, or stopped mid-answer."""
        return UpstreamTimeout(
            f"Copilot went silent for {self._idle_timeout:g}s mid-answer"
            if answering
            else f"Copilot did not start answering within {self._first_token_timeout:g}s"
        )

    def _read(
        self,
        transport: Socket,
        stream: copilot.EventStream,
        decoder: CopilotDecoder,
        frames: _FrameLog,
        held_send: str,
        early: list[Event],
        should_stop: Callable[[], bool],
    ) -> Iterator[Event]:
        """Events until `Done`, enforcing the first-token and idle deadlines and the drain after `done`."""
        deadline = time.monotonic() + self._first_token_timeout
        answering = False  # something of the answer arrived; from then on the idle deadline applies
        drain_until: float | None = None
        events, arrived = early, False
        while True:
            answering = answering or bool(events)
            if answering and (arrived or events):
                deadline = time.monotonic() + self._idle_timeout
            yield from events
            challenge = decoder.take_challenge()
            if challenge is not None:
                self._answer(transport, frames, challenge, resend=held_send)
            now = time.monotonic()
            if decoder.done:
                drain_until = drain_until if drain_until is not None else now + self._done_drain
                if decoder.suggested or now >= drain_until:
                    yield decoder.finish()
                    return
            if should_stop():
                self._log.info("event=copilot_turn_cancelled stage=stream chars=%d", len(decoder.text))
                return
            if drain_until is None and now >= deadline:
                raise self._silence(answering=answering)
            until = drain_until if drain_until is not None else deadline
            try:
                message = transport.recv(max(min(STOP_POLL, until - now), 0.001))
            except Interrupted as exc:
                yield _closed(decoder, exc)  # the end of the turn, or it raises
                return
            if message is None:
                events, arrived = [], False
                continue
            frames.add("S→", message)
            events, arrived = decoder.feed_message(stream.feed(message)), True


def _closed(decoder: CopilotDecoder, exc: Interrupted) -> Done:
    """A bare close of the socket: the end of the turn after `done` or with an image, else an error."""
    if decoder.done or decoder.image is not None:
        # After `done`, or with an image in hand, a bare close is how turns end (B3.2).
        return decoder.finish()
    if decoder.text:
        raise Interrupted("Copilot closed the connection mid-answer", partial=decoder.text) from exc
    raise UpstreamError("Copilot closed the connection without replying") from exc
