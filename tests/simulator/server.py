"""Serving: one asyncio websockets server for both dialects' HTTP routes and websockets.

This module owns the listening socket and ChatHub's websocket I/O; Copilot's websocket
I/O is `copilot_session`, and both execute turn plans through `playback.perform`. A
`/sydney/ChatHub` websocket is a `ChatHubSession`: it does the SignalR handshake, echoes
pings, and hands every `chat` invocation to a `turns.TurnPlayer`, executing the actions
it plans in a task while it keeps reading (so pings and client closes are seen
mid-answer). A `/c/api/chat` websocket is a `copilot_session.CopilotSession`. Everything
runs on one event loop — a hundred concurrent streaming sessions cost a hundred small
tasks, not threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.simulator import chathub, copilot_routes, tls_listener
from tests.simulator.accounts import Lease, account_of
from tests.simulator.control import BodyAwareConnection, Routes
from tests.simulator.copilot_session import CopilotSession
from tests.simulator.http_util import cookies
from tests.simulator.playback import perform, start_close
from tests.simulator.state import SimulatorState
from tests.simulator.turns import TurnPlayer

log = logging.getLogger(__name__)

HANDSHAKE = {"protocol": "json", "version": 1}
IDLE_BEFORE_INVOCATION = 60.0
"""Seconds a socket may sit between handshake and invocation before we close it."""


class _Abort(Exception):
    """The client broke the framing; the session ends (the violation is already recorded)."""


def _redacted(message: str | bytes) -> str:
    """A client frame fit for the debug log: the conversation signature blanked out."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    try:
        records = chathub.decode(text)
    except ValueError:
        return repr(text[:200])
    for record in records:
        for argument in record.get("arguments") or []:
            if isinstance(argument, dict) and argument.get("conversationSignature"):
                argument["conversationSignature"] = "<redacted>"
    return chathub.encode(*records).replace(chathub.RS, "␞")


class ChatHubSession:
    """One `/sydney/ChatHub` websocket, from handshake to close."""

    def __init__(self, state: SimulatorState, ws: ServerConnection, lease: Lease | None = None) -> None:
        self.state = state
        self.ws = ws
        self.lease = lease
        """The account slot taken at the upgrade: held while a turn runs (see `accounts`)."""
        self.account = account_of(cookies(ws.request.headers)) if ws.request else account_of({})
        self.records: deque[dict[str, Any]] = deque()
        query = parse_qs(urlsplit(ws.request.path).query if ws.request else "", keep_blank_values=True)
        # parse_qs turns a raw "+" into a space: a client that forgets to URL-encode the
        # token gets it mangled here, exactly as a real server would.
        self.access_token = query.get("sec_access_token", [None])[0]

    async def next_record(self) -> dict[str, Any]:
        """The next client record, reading websocket messages as needed."""
        while not self.records:
            message = await self.ws.recv()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("event=client_frame frame=%s", _redacted(message))
            try:
                self.records.extend(chathub.decode(message))
            except ValueError as exc:
                self.state.violation(f"unparseable client frame: {exc}")
                raise _Abort from exc
        return self.records.popleft()

    async def run(self) -> None:
        """Handshake, then serve invocations until either side closes."""
        first = await self.next_record()
        if first != HANDSHAKE:
            self.state.violation(f"first record must be the SignalR handshake, got {first!r:.200}")
            await start_close(self.ws, 1002, "handshake expected")
            return
        await self.ws.send(chathub.encode({}))
        await self._serve()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        turn: asyncio.Task[str] | None = None
        reading: asyncio.Task[dict[str, Any]] | None = None
        deadline = loop.time() + IDLE_BEFORE_INVOCATION
        try:
            while True:
                if reading is None:
                    reading = asyncio.ensure_future(self.next_record())
                waiting: set[asyncio.Future[Any]] = {reading}
                if turn is not None:
                    waiting.add(turn)
                timeout = None if turn is not None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    log.debug("event=idle_close")
                    await start_close(self.ws)
                    return
                if turn is not None and turn in done:
                    if self.lease is not None:
                        self.lease.release()
                    if turn.result() == "closed":
                        return
                    turn = None
                    deadline = loop.time() + self.state.config.linger
                if reading in done:
                    record = reading.result()  # raises ConnectionClosed / _Abort to end the session
                    reading = None
                    turn = await self._dispatch(record, turn)
        finally:
            for task in (reading, turn):
                if task is None:
                    continue
                task.cancel()  # a no-op when done; either way collect the outcome so asyncio stays quiet
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _dispatch(
        self, record: dict[str, Any], turn: asyncio.Task[str] | None
    ) -> asyncio.Task[str] | None:
        """Act on one client record; returns the (possibly new) running turn task."""
        kind = record.get("type")
        if kind == 6:
            await self.ws.send(chathub.encode({"type": 6}))
        elif kind == 4 and record.get("target") == "chat":
            self.state.stats.invoked("chathub")
            arguments = record.get("arguments")
            if not (isinstance(arguments, list) and arguments and isinstance(arguments[0], dict)):
                self.state.violation("chat invocation without an arguments[0] object")
                raise _Abort
            self.state.last_invocation = arguments[0]
            if turn is not None:
                self.state.violation("a second chat invocation arrived while a turn was still streaming")
                return turn
            try:
                player = TurnPlayer(self.state, record, self.access_token, account=self.account)
            except (TypeError, AttributeError, KeyError) as exc:
                self.state.violation(f"malformed chat invocation: {exc!r}")
                raise _Abort from exc
            if self.lease is not None:
                self.lease.hold()
            return asyncio.ensure_future(perform(self.ws, player.play()))
        elif kind == 5:
            # CancelInvocation: stop streaming; the turn is not recorded.
            if turn is not None:
                turn.cancel()
            if self.lease is not None:
                self.lease.release()
            return None
        elif kind == 7:
            await start_close(self.ws)
        else:
            self.state.violation(f"unexpected client record {record!r:.200}")
        return turn


class SimulatorServer:
    """The simulator server: owns the state and the websockets `Server`."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.routes = Routes(state)

    async def handle(self, ws: ServerConnection) -> None:
        """websockets connection handler: `/c/api/chat` is Copilot, anything else ChatHub.

        `Routes` only lets those two paths through to the handshake.
        """
        path = urlsplit(ws.request.path).path if ws.request else ""
        dialect = "copilot" if path == copilot_routes.CHAT_PATH else "chathub"
        lease = ws.account_lease if isinstance(ws, BodyAwareConnection) else None
        self.state.stats.opened(dialect)
        try:
            if dialect == "copilot":
                await CopilotSession(self.state, ws, lease).run()
            else:
                await ChatHubSession(self.state, ws, lease).run()
        except (ConnectionClosed, _Abort):
            pass
        finally:
            if lease is not None:
                lease.release()
            # reset() replaces the Stats object; count down on the current one. A socket
            # stops counting as open once its session is over, even if the client has yet
            # to finish the closing handshake awaited below.
            self.state.stats.closed(dialect)
            if ws.transport is not None and not ws.transport.is_closing():
                await ws.close()

    def serve(self, host: str, port: int) -> Server:
        """Start listening (await it, or use it as an async context manager)."""
        return serve(
            self.handle,
            host,
            port,
            process_request=self.routes,
            create_connection=BodyAwareConnection,
            ping_interval=None,  # Bing keeps alive with SignalR type 6; Copilot clients do not ping
            max_size=4 * 2**20,
            close_timeout=2,
        )


async def run(
    state: SimulatorState,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    tls: ssl.SSLContext | None = None,
    tls_port: int = 0,
) -> None:
    """Serve until cancelled; `ready` receives the base URL(s) once the ports are bound.

    With a `tls` context the same routes are also served over TLS on `tls_port`
    (`tls_listener`), and `ready` gets "http://HOST:PORT https://localhost:TLS_PORT".
    """
    server = SimulatorServer(state)
    async with server.serve(host, port) as listening:
        bound_host, bound_port = listening.sockets[0].getsockname()[:2]
        if tls is None:
            ready(f"http://{bound_host}:{bound_port}")
            await asyncio.Event().wait()
            return
        listener = tls_listener.bind(host, tls_port)
        accepting = tls_listener.TlsListener(listening, tls, lambda: state.tls_log)
        ready(f"http://{bound_host}:{bound_port} https://localhost:{listener.getsockname()[1]}")
        await accepting.run(listener)
