"""One ChatHub turn's records on one open websocket: the handshake, the reading and their deadlines.

`BingClient.stream_turn` opens the socket and builds the invocation; a `TurnExchange`
then owns what crosses the socket: the SignalR handshake (send `{"protocol":"json"}`,
wait for `{}`), the ping and the invocation, then records until the turn's completion,
with a generous deadline for the first token (Bing may search the web first), a shorter
idle one between frames, a keepalive ping, and a cancellation poll so a client that
went away frees the worker within half a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from workers.upstream import chathub
from workers.upstream.chathub_decode import ChatHubDecoder
from workers.upstream.errors import Interrupted, ProtocolError, UpstreamError, UpstreamTimeout
from workers.upstream.events import Event, Limits
from workers.upstream.wire import Socket

STOP_POLL = 0.5  # how long a cancelled turn may keep the worker


def _closed_error(partial: str) -> UpstreamError:
    """What a socket that died before `Done` means for the turn: partial text or no reply."""
    if partial:
        return Interrupted("Bing closed the connection mid-answer", partial=partial)
    return UpstreamError("upstream closed the connection without replying")


class TurnExchange:
    """The records of one turn on `transport`, with the deadlines that bound each wait."""

    def __init__(
        self,
        transport: Socket,
        *,
        connect_timeout: float,
        first_token_timeout: float,
        idle_timeout: float,
        ping_interval: float,
        logger: logging.Logger,
    ) -> None:
        self.transport = transport
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._ping_interval = ping_interval
        self._log = logger

    def handshake(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
        """Send the SignalR handshake and wait for `{}`; returns records that came with it.

        None means `should_stop` fired while waiting.
        """
        deadline = time.monotonic() + self._connect_timeout
        sent = False
        while True:
            if should_stop():
                self._log.info("event=bing_turn_cancelled stage=handshake")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamTimeout(f"no ChatHub handshake reply within {self._connect_timeout:g}s")
            try:
                if not sent:
                    self.transport.send(chathub.HANDSHAKE)
                    sent = True
                message = self.transport.recv(min(STOP_POLL, remaining))
            except Interrupted as exc:
                raise UpstreamError("the upstream closed the connection during the handshake") from exc
            if message is None:
                continue
            records = [r for r in chathub.split_records(message) if r.get("type") != 6]
            if not records:
                continue
            ack, rest = records[0], records[1:]
            if ack.get("error"):
                raise UpstreamError(f"ChatHub refused the handshake: {ack['error']}")
            if ack:
                raise ProtocolError("ChatHub answered the handshake with something other than {}")
            return rest

    def send_turn(self, invocation: str) -> None:
        """Send a ping and the turn's invocation; a closed socket here means Bing never replied."""
        try:
            self.transport.send(chathub.PING)
            self.transport.send(invocation)
        except Interrupted as exc:
            raise _closed_error("") from exc

    def read(
        self,
        decoder: ChatHubDecoder,
        pending: list[dict[str, Any]],
        should_stop: Callable[[], bool],
    ) -> Iterator[Event]:
        """Events until `Done`, enforcing the first-token and idle deadlines."""
        now = time.monotonic()
        deadline = now + self._first_token_timeout
        answering = False  # a meaningful event arrived; from then on the idle deadline applies
        last_sent = now
        while True:
            for record in pending:
                if record.get("type") == 6:
                    continue  # our own pings keep the socket alive; no need to echo
                events = decoder.feed(record)
                if any(not isinstance(event, Limits) for event in events):
                    answering = True
                if answering:
                    deadline = time.monotonic() + self._idle_timeout
                yield from events
                if decoder.done:
                    return
            if should_stop():
                self._log.info("event=bing_turn_cancelled stage=stream chars=%d", len(decoder.text))
                return
            now = time.monotonic()
            if now >= deadline:
                raise UpstreamTimeout(
                    f"Bing went silent for {self._idle_timeout:g}s mid-answer"
                    if answering
                    else f"Bing did not start answering within {self._first_token_timeout:g}s"
                )
            try:
                if now - last_sent >= self._ping_interval:
                    self.transport.send(chathub.PING)
                    last_sent = now
                wait = min(STOP_POLL, deadline - now, last_sent + self._ping_interval - now)
                message = self.transport.recv(max(wait, 0.001))
            except Interrupted as exc:
                raise _closed_error(decoder.text) from exc
            pending = chathub.split_records(message) if message is not None else []
