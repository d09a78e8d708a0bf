"""One Copilot turn's frames on one open websocket: the choreography and its deadlines.

`CopilotClient.stream_turn` opens the socket (or takes the account's parked one) and
builds the held `send`; a `TurnExchange` then owns what crosses the socket: on a fresh
socket the preamble, once (`turn`), waiting briefly for `connected` (2026 servers reject
frames sent before it), answer a proof-of-work challenge and re-send
the held `send`, enforce the first-token and idle deadlines, drain late suggestions
after `done`, and poll for cancellation so a client that went away frees the worker
within half a second. It also keeps the last few frames, as shapes without user text,
to explain an `invalid-event`.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from service.runtime import trace
from workers.upstream import copilot
from workers.upstream.challenges import solve_challenge
from workers.upstream.copilot_conversation import CopilotHandle
from workers.upstream.copilot_decode import Challenge, CopilotDecoder
from workers.upstream.errors import Interrupted, UpstreamError, UpstreamTimeout
from workers.upstream.events import Done, Event
from workers.upstream.wire import Socket

STOP_POLL = 0.5  # how long a cancelled turn may keep the worker
CONNECTED_WAIT = 2.0  # how long to wait for a 2026 server's `connected` before speaking anyway
DONE_DRAIN = 1.0  # g4f's wait for `suggestedFollowups` after `done` (B3.2)
FRAME_MEMORY = 8  # frames kept to explain an `invalid-event`

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


class TurnExchange:
    """The frames of one turn on `transport`, with the deadlines that bound each wait."""

    def __init__(
        self,
        transport: Socket,
        *,
        secrets: list[str],
        first_token_timeout: float,
        idle_timeout: float,
        connected_wait: float,
        done_drain: float,
        logger: logging.Logger,
    ) -> None:
        self.transport = transport
        self.frames = _FrameLog(secrets)
        self.stream = copilot.EventStream()
        self.heard = 0  # frames received: none means a closed socket never saw the turn
        self.closed = False  # the server closed the socket (it cannot carry another turn)
        self.reusable = False  # the turn reached `Done` and the socket is still open
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._connected_wait = connected_wait
        self._done_drain = done_drain
        self._log = logger

    def turn(
        self,
        decoder: CopilotDecoder,
        handle: CopilotHandle,
        held_send: str,
        should_stop: Callable[[], bool],
        *,
        preamble: bool,
    ) -> Iterator[Event]:
        """One turn's frames through `Done`; on success `handle.turns` is advanced before `Done`.

        `preamble`: a fresh socket first waits for `connected` and sends `setOptions` and
        `reportLocalConsents` (B1.3), once per socket; a parked socket already did, so its
        turn is the `send` alone.
        """
        started = time.monotonic()
        early: list[Event] = []
        if preamble:
            first = self.await_connected(should_stop)
            if first is None:
                return
            early = decoder.feed_message(first)  # a server may refuse before we speak
            challenge = decoder.take_challenge()
            if challenge is not None:
                self.answer(challenge, resend=None)
            self.send(copilot.set_options())
            self.send(copilot.report_local_consents())
        else:
            trace.mark("ws_reused")
        self.send(held_send)
        trace.mark("send")
        for event in self.read(decoder, held_send, early, should_stop):
            if isinstance(event, Done):
                handle.turns += 1
                self.reusable = not self.closed  # a bare close can end a turn too (B3.2)
                self._log.info(
                    "event=copilot_turn_done turns=%d chars=%d image=%s reused=%s seconds=%.2f",
                    handle.turns,
                    len(event.text),
                    decoder.image is not None,
                    not preamble,
                    time.monotonic() - started,
                )
            yield event
            if isinstance(event, Done):
                return

    def send(self, frame: str) -> None:
        """Send one frame, remembering its shape; a closed socket here means Copilot never replied."""
        self.frames.add("C→", frame)
        try:
            self.transport.send(frame)
        except Interrupted as exc:
            self.closed = True
            raise UpstreamError("Copilot closed the connection without replying") from exc

    def await_connected(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
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
                message = self.transport.recv(min(STOP_POLL, remaining))
            except Interrupted as exc:
                self.closed = True
                raise UpstreamError("Copilot closed the connection before the turn started") from exc
            if message is None:
                continue
            self.heard += 1
            self.frames.add("S→", message)
            events = self.stream.feed(message)
            if events:
                return [event for event in events if event.get("event") != "connected"]

    def answer(self, challenge: Challenge, *, resend: str | None) -> None:
        """Reply to a proof-of-work challenge, then re-send the held `send` (B7.4)."""
        started = time.monotonic()
        token = solve_challenge(challenge.method, challenge.parameter)
        self._log.info(
            "event=copilot_challenge_answered method=%s seconds=%.3f",
            challenge.method,
            time.monotonic() - started,
        )
        self.send(copilot.challenge_response(challenge.method, token, challenge.id))
        if resend is not None:
            self.send(resend)

    def _silence(self, *, answering: bool) -> UpstreamTimeout:
        """The timeout for a Copilot that never started answering, or stopped mid-answer."""
        return UpstreamTimeout(
            f"Copilot went silent for {self._idle_timeout:g}s mid-answer"
            if answering
            else f"Copilot did not start answering within {self._first_token_timeout:g}s"
        )

    def read(
        self,
        decoder: CopilotDecoder,
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
                self.answer(challenge, resend=held_send)
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
                message = self.transport.recv(max(min(STOP_POLL, until - now), 0.001))
            except Interrupted as exc:
                self.closed = True
                yield _closed(decoder, exc)  # the end of the turn, or it raises
                return
            if message is None:
                events, arrived = [], False
                continue
            self.heard += 1
            self.frames.add("S→", message)
            events, arrived = decoder.feed_message(self.stream.feed(message)), True


def _closed(decoder: CopilotDecoder, exc: Interrupted) -> Done:
    """A bare close of the socket: the end of the turn after `done` or with an image, else an error."""
    if decoder.done or decoder.image is not None:
        # After `done`, or with an image in hand, a bare close is how turns end (B3.2).
        return decoder.finish()
    if decoder.text:
        raise Interrupted("Copilot closed the connection mid-answer", partial=decoder.text) from exc
    raise UpstreamError("Copilot closed the connection without replying") from exc
