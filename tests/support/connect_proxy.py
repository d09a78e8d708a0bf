"""A small HTTP CONNECT proxy for tests: tunnels TCP, leaving from a chosen source address.

Cloudflare binds a clearance to the address it was earned from (issue #15), so an account
may carry an egress proxy, and the tests must show its traffic really leaves through it. On
Linux the whole 127/8 is loopback: this proxy listens on 127.0.0.1 and opens every tunnel
*from* `source_address` (127.0.0.2 by default), so the simulator sees the proxy's address
(`GET /_sim/tls`, the gate's `client`) instead of the client's 127.0.0.1.

It understands only `CONNECT host:port` (anything else: 405), optionally demands Basic
credentials (407 without them), and records each tunnel's target and whether credentials
came (never their value). Threads, not asyncio: a test drives it from synchronous code.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import select
import socket
import socketserver
import threading
from types import TracebackType
from typing import Self
from urllib.parse import quote

HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Tunnel:
    """One CONNECT request the proxy saw."""

    target: str
    """`host:port` as the client asked for it."""
    authenticated: bool
    established: bool


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        head, _, early = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0]
        if method != "CONNECT" or ":" not in target:
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        proxy = self.server.proxy
        authenticated = (
            proxy.expected_auth is not None and headers.get("proxy-authorization") == proxy.expected_auth
        )
        if proxy.expected_auth is not None and not authenticated:
            proxy.record(Tunnel(target, False, False))
            client.sendall(
                b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
                b"Content-Length: 0\r\n\r\n"
            )
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = proxy.open(host.strip("[]"), int(port))
        except (OSError, ValueError):
            proxy.record(Tunnel(target, authenticated, False))
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        proxy.record(Tunnel(target, authenticated, True))
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if early:
                upstream.sendall(early)
            pump(client, upstream, proxy.stopping)


def pump(one: socket.socket, other: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or the proxy stops)."""
    peers = {one: other, other: one}
    while not stopping.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.5)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    peers[sock].shutdown(socket.SHUT_WR)
                return
            peers[sock].sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ConnectProxy


class ConnectProxy:
    """A running CONNECT proxy; use as a context manager or call start()/stop().

    `url` is `http://127.0.0.1:PORT` (with `user:password@` when `credentials` are set, as an
    account's proxy URL would carry them); `tunnels` lists every CONNECT seen, in order.
    """

    handler: type[socketserver.BaseRequestHandler] = _Handler
    """What serves each client connection (`socks_proxy.SocksProxy` speaks SOCKS5 instead)."""
    scheme = "http"
    """The scheme of `url`."""

    def __init__(
        self,
        *,
        source_address: str = "127.0.0.2",
        host: str = "127.0.0.1",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.source_address = source_address
        self.host = host
        self.credentials = credentials
        self.expected_auth = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            if credentials
            else None
        )
        self.tunnels: list[Tunnel] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The proxy URL a client is configured with (credentials percent-encoded, as a URL needs)."""
        user, password = (quote(part, safe="") for part in self.credentials or ("", ""))
        auth = f"{user}:{password}@" if self.credentials else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}"

    @property
    def targets(self) -> list[str]:
        """The `host:port` of every CONNECT, in order."""
        with self._lock:
            return [tunnel.target for tunnel in self.tunnels]

    def record(self, tunnel: Tunnel) -> None:
        with self._lock:
            self.tunnels.append(tunnel)

    def open(self, host: str, port: int) -> socket.socket:
        """A TCP connection to (host, port) from the source address (IPv4 or IPv6 like it)."""
        family = socket.AF_INET6 if ":" in self.source_address else socket.AF_INET
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.bind((self.source_address, 0))
            sock.connect(address)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock

    def start(self) -> Self:
        self._server = _Server((self.host, 0), self.handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="connect-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
