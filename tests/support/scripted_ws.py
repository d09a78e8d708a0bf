"""A scripted websocket server on loopback, for testing upstream clients frame by frame.

Each connection runs `script(ws)`; the server records what the upgrade request carried
(path, headers, every `Origin`) and can refuse the upgrade with a status. The dialect
test files subclass it with their own reading helpers (handshake, preamble).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve


class ScriptedServer:
    """Runs `script(ws)` for every websocket connection, in a background thread."""

    def __init__(self, script: Callable[[ServerConnection], None], reject: int | None = None) -> None:
        self.script = script
        self.reject = reject
        self.paths: list[str] = []
        self.origins: list[list[str]] = []
        self.headers: list[dict[str, str]] = []
        self.closed = threading.Event()
        self.closed_at = 0.0
        self.server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process,
            ping_interval=None,
            compression=None,
            close_timeout=1,
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return int(self.server.socket.getsockname()[1])

    def _process(self, connection: ServerConnection, request: Any) -> Any:
        self.paths.append(request.path)
        self.origins.append(request.headers.get_all("Origin"))
        self.headers.append({key.lower(): value for key, value in request.headers.raw_items()})
        if self.reject:
            return connection.respond(HTTPStatus(self.reject), "rejected\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        try:
            self.script(ws)
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    def wait_for_client_close(self, ws: ServerConnection) -> None:
        """Read until the client closes the socket (ConnectionClosed ends the script)."""
        while True:
            ws.recv()

    def stop(self) -> None:
        """Shut the server down."""
        self.server.shutdown()
        self.thread.join(2)
