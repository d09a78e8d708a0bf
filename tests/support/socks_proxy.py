"""A small SOCKS5 proxy for tests (RFC 1928, RFC 1929 credentials), leaving from a chosen address.

An account's egress proxy may be `socks5://` or `socks5h://` (issue #15), and both upstream
transports must send every connection of that account through it. Like `connect_proxy`, it
listens on 127.0.0.1 and opens each tunnel *from* `source_address` (127.0.0.2 by default), so
the simulator sees the proxy's address. It takes only `CONNECT`; with `credentials` it offers
only username/password authentication (a client that cannot do it gets "no acceptable
method"; wrong ones get a failure status), and records each tunnel's target as the client
named it: a host name for `socks5h://` (the proxy resolves it), an address for `socks5://`.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import struct

from tests.support.connect_proxy import ConnectProxy, Tunnel, pump

VERSION = 5
NO_AUTH, USER_PASSWORD, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CONNECT = 0x01
IPV4, DOMAIN, IPV6 = 0x01, 0x03, 0x04
SUCCEEDED, HOST_UNREACHABLE, COMMAND_NOT_SUPPORTED, ADDRESS_NOT_SUPPORTED = 0x00, 0x04, 0x07, 0x08


def _exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from `sock`; ConnectionError if it closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed mid-negotiation")
        data += chunk
    return data


def _reply(code: int, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    """A SOCKS5 reply with the bound IPv4/IPv6 address."""
    address = ipaddress.ip_address(bound[0])
    kind = IPV4 if address.version == 4 else IPV6
    return bytes((VERSION, code, 0, kind)) + address.packed + struct.pack("!H", bound[1])


class _SocksHandler(socketserver.BaseRequestHandler):
    server: socketserver.ThreadingTCPServer

    @property
    def proxy(self) -> SocksProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            authenticated = self._negotiate(client)
            if authenticated is None:
                return
            target = self._request(client)
        except (ConnectionError, OSError):
            return
        if target is None:
            return
        host, port = target
        named = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            upstream = self.proxy.open(host, port)
        except OSError:
            self.proxy.record(Tunnel(named, authenticated, False))
            client.sendall(_reply(HOST_UNREACHABLE))
            return
        self.proxy.record(Tunnel(named, authenticated, True))
        with upstream:
            client.sendall(_reply(SUCCEEDED, upstream.getsockname()[:2]))
            pump(client, upstream, self.proxy.stopping)

    def _negotiate(self, client: socket.socket) -> bool | None:
        """The method exchange (and RFC 1929 sub-negotiation); None when the client is turned away."""
        version, count = _exactly(client, 2)
        methods = set(_exactly(client, count))
        if version != VERSION:
            return None
        wanted = USER_PASSWORD if self.proxy.credentials else NO_AUTH
        if wanted not in methods:
            client.sendall(bytes((VERSION, NO_ACCEPTABLE)))
            return None
        client.sendall(bytes((VERSION, wanted)))
        if wanted == NO_AUTH:
            return False
        _sub_version, user_size = _exactly(client, 2)
        user = _exactly(client, user_size).decode("utf-8", "replace")
        password = _exactly(client, _exactly(client, 1)[0]).decode("utf-8", "replace")
        if (user, password) != self.proxy.credentials:
            client.sendall(b"\x01\x01")
            self.proxy.record(Tunnel("?", False, False))
            return None
        client.sendall(b"\x01\x00")
        return True

    def _request(self, client: socket.socket) -> tuple[str, int] | None:
        """The CONNECT request's (host, port); None (after a failure reply) for anything else."""
        version, command, _reserved, kind = _exactly(client, 4)
        if kind == IPV4:
            host = socket.inet_ntop(socket.AF_INET, _exactly(client, 4))
        elif kind == IPV6:
            host = socket.inet_ntop(socket.AF_INET6, _exactly(client, 16))
        elif kind == DOMAIN:
            host = _exactly(client, _exactly(client, 1)[0]).decode("idna")
        else:
            client.sendall(_reply(ADDRESS_NOT_SUPPORTED))
            return None
        (port,) = struct.unpack("!H", _exactly(client, 2))
        if version != VERSION or command != CONNECT:
            client.sendall(_reply(COMMAND_NOT_SUPPORTED))
            return None
        return host, port


class SocksProxy(ConnectProxy):
    """A running SOCKS5 proxy; `url` is `socks5h://` (or `scheme`) `[user:password@]127.0.0.1:PORT`."""

    handler = _SocksHandler

    def __init__(
        self,
        *,
        scheme: str = "socks5h",
        source_address: str = "127.0.0.2",
        host: str = "127.0.0.1",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(source_address=source_address, host=host, credentials=credentials)
        self.scheme = scheme
