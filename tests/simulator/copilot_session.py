"""One Copilot `/c/api/chat` websocket: ordering, challenges, and the turns it carries.

The I/O side of the Copilot dialect (ChatHub's is `server.ChatHubSession`). The upgrade
was already checked by `copilot_routes.check_upgrade` (api-version, Origin, revoked
tokens). Then, per B1.3 and B3.1:

- strict mode (`copilot_strict`, the 2026 behaviour): `connected` goes out after
  `copilot_connected_delay` (twice with `copilot_connected_twice`); any frame that
  arrives before it, a `send` on a socket without `clientSessionId`, or a duplicate `send`
  (identical conversation/content/mode, already accepted on this socket, no challenge in
  between) is answered `invalid-event` (id "0.0002") and recorded as a violation. A
  duplicate also cancels the turn it duplicates. Lenient mode sends no `connected` and
  checks no order.
- a challenge a turn issued waits for `challengeResponse` (which must echo its id); a
  correct answer clears the next `send` (the re-sent one) to be answered; a wrong one gets
  `invalid-event`. Answering a null/cloudflare challenge at all is a violation.
- each socket is listed with its account (`GET /_sim/accounts`: `sockets`), with the
  `clientSessionId` of its URL (gpt4f 4aa01b58, B5b [S]; a value one of the account's recent
  sockets already carried is recorded as a violation: new per socket, B1.2) and the `supportedFeatures` /
  `supportedCards` of its `setOptions` (WCA #20's browser capture lists 6 and 28, B5b [S]);
- one socket carries any number of turns, one after another (a browser tab keeps its socket,
  B2: every `send` names its conversation); after a finished turn it stays open until the
  client closes it, or for `copilot_idle_close` seconds of silence when that is set;
- a human check (null or cloudflare challenge) left unanswered keeps the socket silent for
  `copilot_human_check_silence` seconds (B5b [S]: 60) before it closes;
- every client message is read leniently (`copilot.decode_client`); its problems are
  violations, and a non-JSON message is answered `invalid-event`;
- faults for the parked-socket paths: `copilot_refuse_reused` (a socket idle that long after
  a turn answers its next `send` with `invalid-event` alone, no violation) and
  `copilot_idle_ping` (websocket-level pings to a socket idle between turns; its pongs are
  counted in its record).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from tests.simulator import challenges, copilot
from tests.simulator.accounts import Lease, account_of
from tests.simulator.challenges import ANSWERABLE, Challenge
from tests.simulator.copilot_routes import request_account
from tests.simulator.copilot_state import identity
from tests.simulator.copilot_turns import CopilotTurnPlayer, SocketInfo
from tests.simulator.http_util import cookies
from tests.simulator.playback import perform, start_close
from tests.simulator.state import SimulatorState

log = logging.getLogger(__name__)

IDLE_BEFORE_SEND = 60.0
"""Seconds a socket may sit without a turn before we close it."""

TurnTask = asyncio.Task[str] | None
"""The task streaming the current turn's plan, if one is running."""


def _send_key(event: dict[str, Any]) -> str:
    """What makes two sends "the same" for duplicate detection."""
    return json.dumps([event.get("conversationId"), event.get("content"), event.get("mode")], sort_keys=True)


class CopilotSession:
    """One `/c/api/chat` websocket, from upgrade to close."""

    def __init__(self, state: SimulatorState, ws: ServerConnection, lease: Lease | None = None) -> None:
        self.state = state
        self.ws = ws
        self.lease = lease
        """The account slot taken at the upgrade: held while a turn runs (see `accounts`)."""
        request = ws.request
        query = parse_qs(urlsplit(request.path).query if request else "", keep_blank_values=True)
        jar = cookies(request.headers) if request else {}
        self.socket = SocketInfo(
            owner=identity(jar),
            client_session_id=query.get("clientSessionId", [None])[0] or None,
            features=query.get("features", [None])[0],
            account=request_account(request, urlsplit(request.path).query) if request else account_of({}),
        )
        user_agent = request.headers.get("User-Agent") if request else None
        if state.accounts.session_reused(self.socket.account, self.socket.client_session_id):
            # Recorded, not refused: B1.2 says a client draws one per socket, not that servers check.
            self.violation(
                "clientSessionId reused from an earlier socket of this account (new per socket, B1.2)"
            )
        self.socket.record = state.accounts.socket_opened(
            self.socket.account, self.socket.client_session_id, user_agent
        )
        self.strict = state.config.copilot_strict  # fixed per socket, like a deployed server
        self.connected = not self.strict
        self.player: CopilotTurnPlayer | None = None
        self.player_key = ""
        self.cleared: Challenge | None = None
        self.cleared_key = ""
        self.accepted: set[str] = set()
        self.idle = False  # the last turn is over; the socket waits for the next (stats: idle_sockets)
        self.idle_since: float | None = None  # when it last became idle after a turn
        self.pinger: asyncio.Task[None] | None = None  # `copilot_idle_ping` while idle

    def violation(self, text: str) -> None:
        """Record a client violation, tagged with the dialect."""
        self.state.violation(f"copilot: {text}")

    async def reject(self, *, with_id: bool = True) -> None:
        """Answer the offending frame with `invalid-event`."""
        frame = copilot.error("invalid-event", event_id=copilot.ERROR_ID if with_id else None)
        await self.ws.send(copilot.encode(frame))

    async def run(self) -> None:
        """Serve the socket until either side closes (ConnectionClosed ends it from below)."""
        loop = asyncio.get_running_loop()
        config = self.state.config
        connect_at = loop.time() + config.copilot_connected_delay if self.strict else None
        deadline = loop.time() + IDLE_BEFORE_SEND
        turn: TurnTask = None
        reading: asyncio.Task[str | bytes] | None = None
        try:
            while True:
                if reading is None:
                    reading = asyncio.ensure_future(self.ws.recv())
                waiting: set[asyncio.Future[Any]] = {reading} if turn is None else {reading, turn}
                if connect_at is not None:
                    timeout: float | None = max(0.0, connect_at - loop.time())
                elif turn is not None or deadline == math.inf:
                    timeout = None
                else:
                    timeout = max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done and connect_at is not None:
                    connect_at = None
                    for _ in range(2 if config.copilot_connected_twice else 1):
                        await self.ws.send(copilot.encode(copilot.connected()))
                    self.connected = True
                    continue
                if not done:
                    log.debug("event=idle_close dialect=copilot")
                    await start_close(self.ws)
                    return
                if turn is not None and turn in done:
                    pending = self._pending()
                    if self.lease is not None and (pending is None or pending.method not in ANSWERABLE):
                        self.lease.release()  # the turn is over unless it waits for a challenge answer
                    if turn.result() == "closed":
                        return
                    turn = None
                    if pending is None:
                        self.accepted.clear()  # that turn is over: the same words again are a new turn
                        self._idle(True)
                    quiet = self._quiet_time()
                    deadline = loop.time() + quiet if quiet else math.inf
                if reading in done:
                    message = reading.result()  # raises ConnectionClosed to end the session
                    reading = None
                    turn = await self._receive(message, turn)
        finally:
            self._idle(False)
            for task in (reading, turn, self.pinger):
                if task is not None:
                    task.cancel()  # a no-op when done; collect the outcome so asyncio stays quiet
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _receive(self, message: str | bytes, turn: TurnTask) -> TurnTask:
        """Read one client message and act on each event in it."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=client_frame dialect=copilot frame=%r", message[:300])
        decoded = copilot.decode_client(message)
        for problem in decoded.problems:
            self.violation(problem)
        for event in decoded.events:
            turn = await self._dispatch(event, turn)
        if decoded.malformed:
            await self.reject()
        return turn

    async def _dispatch(self, event: dict[str, Any], turn: TurnTask) -> TurnTask:
        """Act on one client event; returns the (possibly new) running turn task."""
        name = event.get("event")
        if name == "send":
            self.state.stats.invoked("copilot")
            self.state.last_send = event
        if not self.connected:
            self.violation(f"{name!r} event sent before the server's connected event")
            await self.reject()
            return turn
        if name == "setOptions":
            self.socket.set_options = event
            if self.socket.record is not None:
                self.socket.record["supportedFeatures"] = event.get("supportedFeatures")
                self.socket.record["supportedCards"] = event.get("supportedCards")
        elif name == "reportLocalConsents":
            self.socket.local_consents = event
        elif name == "challengeResponse":
            await self._answer(event)
        elif name == "send":
            return await self._send(event, turn)
        else:
            self.violation(f"unknown client event {name!r}")
            if self.strict:
                await self.reject()
        return turn

    def _idle(self, idle: bool) -> None:
        """Note in the stats that the socket waits for a turn (True) or carries one (False)."""
        if idle != self.idle:
            self.idle = idle
            self.state.stats.idled("copilot", idle)
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time() if idle else None
        if idle and self.state.config.copilot_idle_ping and self.pinger is None:
            self.pinger = asyncio.ensure_future(self._ping_while_idle(self.state.config.copilot_idle_ping))

    async def _ping_while_idle(self, every: float) -> None:
        """Websocket-level pings while the socket waits between turns; each pong is counted in the
        socket's record (`GET /_sim/accounts`: `sockets[].pongs`, present only with pings on)."""
        while True:
            await asyncio.sleep(every)
            if self.idle:
                pong = await self.ws.ping()
                await pong
                if self.socket.record is not None:
                    self.socket.record["pongs"] = self.socket.record.get("pongs", 0) + 1

    def _refused_as_reused(self) -> bool:
        """`copilot_refuse_reused`: this send comes to a socket idle long enough to be refused."""
        limit, since = self.state.config.copilot_refuse_reused, self.idle_since
        return bool(limit) and since is not None and asyncio.get_running_loop().time() - since >= limit

    def _quiet_time(self) -> float:
        """How long the socket waits after a turn before closing itself.

        While a human check (a null or cloudflare challenge) is pending,
        `copilot_human_check_silence` (B5b [S]: the real socket is silent for 60 s); while a
        proof-of-work answer is awaited, `linger`; after a finished turn the socket stays open
        for the next one (a browser tab keeps it), closed after `copilot_idle_close` seconds
        of silence when that is set (0 = never: this returns 0).
        """
        pending = self._pending()
        if pending is not None and pending.method not in ANSWERABLE:
            return self.state.config.copilot_human_check_silence
        if pending is not None:
            return self.state.config.linger
        return self.state.config.copilot_idle_close

    def _pending(self) -> Challenge | None:
        """The challenge this socket is waiting on, if any."""
        challenge = self.player.challenge if self.player is not None else None
        return challenge if challenge is not None and not challenge.answered else None

    async def _send(self, event: dict[str, Any], turn: TurnTask) -> TurnTask:
        fatal, soft = copilot.send_problems(event)
        for problem in [*fatal, *soft]:
            self.violation(problem)
        if fatal:
            await self.reject()
            return turn
        if self.strict and not self.socket.client_session_id:
            self.violation("send on a socket opened without clientSessionId")
            await self.reject()
            return turn
        if turn is None and self._refused_as_reused():
            log.info("event=copilot_reused_socket_refused")
            self.idle_since = None  # refused once; the client's next move is its own
            await self.reject()
            return turn
        key, cleared = _send_key(event), None
        if self._pending() is not None:
            if self.strict:
                self.violation("send while a challenge is unanswered")
                await self.reject()
                return turn
            self.player = None  # lenient: the new send starts over
        if self.cleared is not None:
            if key != self.cleared_key:
                self.violation("the send after a challenge differs from the challenged one")
            cleared, self.cleared = self.cleared, None
        elif self.strict and key in self.accepted:
            self.violation("duplicate send without a challenge in between")
            if turn is not None:
                turn.cancel()  # the answer it duplicates stops here, unrecorded
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await turn
            await self.reject()
            return None
        if turn is not None:
            self.violation("a second send arrived while a turn was still streaming")
            if self.strict:
                await self.reject()
            return turn
        self.accepted.add(key)
        self._idle(False)
        if self.lease is not None:
            self.lease.hold()
        self.player, self.player_key = CopilotTurnPlayer(self.state, event, self.socket, cleared=cleared), key
        return asyncio.ensure_future(perform(self.ws, self.player.play()))

    async def _answer(self, event: dict[str, Any]) -> None:
        """Judge a `challengeResponse` against the pending challenge."""
        challenge = self._pending()
        if challenge is None:
            self.violation("challengeResponse without a pending challenge")
            await self.reject()
            return
        token = event.get("token")
        challenge.answered = True
        challenge.token = token if isinstance(token, str) else json.dumps(token)
        if challenge.method not in challenges.ANSWERABLE:
            method = challenge.method or "null"
            self.violation(f"answered a {method}-method challenge (it needs a browser; stop instead)")
            await self.reject()
            return
        if event.get("id") != challenge.id:
            self.violation(f"challengeResponse id {event.get('id')!r} does not echo {challenge.id!r}")
            await self.reject()
            return
        if event.get("method") not in (None, challenge.method):
            self.violation(f"challengeResponse method {event.get('method')!r} is not {challenge.method!r}")
        if not isinstance(token, str) or not challenges.check(challenge, token):
            log.info("event=challenge_failed method=%s", challenge.method)
            await self.reject(with_id=False)  # a wrong answer is the server's verdict, not a violation
            return
        challenge.solved = True
        self.cleared, self.cleared_key = challenge, self.player_key
