"""The simulator's TLS port: read each client's ClientHello, then serve the same routes over TLS.

A second listening socket next to the plain one. For every accepted connection we *peek*
(`MSG_PEEK`) at the bytes until the whole ClientHello is in, parse it (`tls_hello`) and
record its fingerprints in `TlsLog` (`GET /_sim/tls`), and only then hand the untouched
socket to asyncio's TLS machinery (`loop.connect_accepted_socket(..., ssl=...)`). The
protocol it runs is the very websockets connection the plain port uses, bound to the plain
port's `Server`, so both dialects, their websockets and the `/_sim` API answer the same way
on both ports; the connection carries the parsed hello as `client_hello` for the
Cloudflare gate (`cloudflare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection
from websockets.server import ServerProtocol

from tests.simulator import tls_hello
from tests.simulator.control import BodyAwareConnection

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
"""Seconds a client may take to send its whole ClientHello."""
MAX_HELLO = 64 * 1024
"""A ClientHello larger than this is refused (real ones are under 2 KiB; post-quantum ones ~1.8 KiB)."""
MAX_MESSAGE = 4 * 2**20
"""Largest websocket message, as on the plain port (`server.SimulatorServer.serve`)."""


def connection_factory(server: Server, hello: tls_hello.ClientHello) -> Callable[[], ServerConnection]:
    """A protocol factory like `websockets.asyncio.server.serve`'s, for one TLS connection of `server`."""

    def make() -> ServerConnection:
        protocol = ServerProtocol(max_size=MAX_MESSAGE)
        connection = BodyAwareConnection(protocol, server, ping_interval=None, close_timeout=2)
        connection.client_hello = hello
        return connection

    return make


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until `sock` has bytes to read (or is closed)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def peek_hello(sock: socket.socket) -> tls_hello.ClientHello:
    """The ClientHello waiting on `sock`, read without consuming it (ValueError if it is not one)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HELLO_TIMEOUT):
        while True:
            await _readable(loop, sock)
            try:
                data = sock.recv(MAX_HELLO, socket.MSG_PEEK)
            except BlockingIOError:
                continue  # a spurious wake-up
            if not data:
                raise ValueError("closed before a ClientHello")
            try:
                return tls_hello.parse(data)
            except tls_hello.Incomplete:
                if len(data) >= MAX_HELLO:
                    raise ValueError("ClientHello too large") from None
                await asyncio.sleep(0.005)  # the rest is in flight; the peeked bytes keep the fd readable


class TlsListener:
    """Accepts TLS connections for `server` on its own socket; `run()` until cancelled."""

    def __init__(self, server: Server, context: ssl.SSLContext, log_: Callable[[], tls_hello.TlsLog]) -> None:
        self.server = server
        self.context = context
        self._log = log_
        self.tasks: set[asyncio.Task[None]] = set()

    def tls_log(self) -> tls_hello.TlsLog:
        """The log in force (a callable, as `reset()` replaces the state's log)."""
        return self._log()

    async def run(self, listener: socket.socket) -> None:
        """Accept until cancelled; each connection is handled in its own task."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        try:
            while True:
                sock, _ = await loop.sock_accept(listener)
                task = asyncio.ensure_future(self.accept(sock))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            listener.close()
            for task in list(self.tasks):
                task.cancel()

    async def accept(self, sock: socket.socket) -> None:
        """Read the hello, record it, then run TLS and the websockets connection on the socket."""
        loop = asyncio.get_running_loop()
        try:
            peer = sock.getpeername()
            hello = await peek_hello(sock)
        except (OSError, ValueError, TimeoutError) as exc:
            log.info("event=tls_refused reason=%s", exc)
            sock.close()
            return
        self.tls_log().add(hello, (peer[0], peer[1]))
        log.debug("event=tls_hello client=%s ja4=%s", peer[0], hello.ja4())
        try:
            await loop.connect_accepted_socket(
                connection_factory(self.server, hello),
                sock,
                ssl=self.context,
                ssl_handshake_timeout=HELLO_TIMEOUT,
                ssl_shutdown_timeout=2.0,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("event=tls_handshake_failed reason=%s", exc)
            with contextlib.suppress(OSError):
                sock.close()


def bind(host: str, port: int) -> socket.socket:
    """The TLS port's listening socket."""
    return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
