"""Executing a turn plan on a websocket, and closing sockets without blocking the session.

Both dialects' sessions hand their turn plans (lazy generators of `actions`) to
`perform`, so sleeping, closing and aborting behave identically for ChatHub and Copilot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from websockets.asyncio.server import ServerConnection

from tests.simulator.actions import Action, Close, Hang, Send, Sleep

_closing: set[asyncio.Task[None]] = set()
"""Close handshakes in flight (asyncio keeps only weak references to tasks)."""


async def start_close(ws: ServerConnection, code: int = 1000, reason: str = "") -> None:
    """Put a close frame on the wire and return; the handshake finishes in the background.

    websockets' `close()` waits for the client to answer and drop TCP (up to the close
    timeout). Sessions end as soon as they have decided to close, so the socket stops
    counting as open then — a client that never answers the close must not hold the
    `open_sockets` counter up. The connection handler awaits the rest of the handshake.
    """
    task = asyncio.ensure_future(ws.close(code, reason))
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    await asyncio.sleep(0)  # let the task send the close frame before we go on


async def perform(ws: ServerConnection, actions: Iterator[Action]) -> str:
    """Execute a turn plan; "closed" when the plan ended the socket, else "done"."""
    for action in actions:
        if isinstance(action, Send):
            await ws.send(action.message)
        elif isinstance(action, Sleep):
            await asyncio.sleep(action.seconds)
        elif isinstance(action, Close):
            if action.abrupt and ws.transport is not None:
                ws.transport.abort()  # no close frame: the client sees a dead socket
            else:
                await start_close(ws, action.code, action.reason)
            return "closed"
        elif isinstance(action, Hang):
            await asyncio.Event().wait()  # until the client (or shutdown) closes the socket
    return "done"
