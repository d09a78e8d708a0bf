"""The tests' CONNECT proxy (tests/support/connect_proxy.py): tunnels from its source address."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.connect_proxy import ConnectProxy, Tunnel


@pytest.fixture()
def echo() -> Iterator[tuple[int, list[str]]]:
    """A TCP echo server on 127.0.0.1 that records each peer's address."""
    listener = socket.create_server(("127.0.0.1", 0))
    peers: list[str] = []

    def serve() -> None:
        while True:
            try:
                connection, peer = listener.accept()
            except OSError:
                return
            peers.append(peer[0])
            with connection:
                while data := connection.recv(4096):
                    connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], peers
    listener.close()


def connect(proxy: ConnectProxy, target: str, auth: str | None = None) -> tuple[socket.socket, bytes]:
    """Send CONNECT through `proxy`; returns the socket and the proxy's response head."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def test_tunnel_leaves_from_the_source_address(echo: tuple[int, list[str]]) -> None:
    port, peers = echo
    with ConnectProxy(source_address="127.0.0.2") as proxy:
        sock, head = connect(proxy, f"localhost:{port}")
        with sock:
            assert head.startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        assert proxy.targets == [f"localhost:{port}"]
        assert proxy.tunnels == [Tunnel(f"localhost:{port}", authenticated=False, established=True)]
    assert peers == ["127.0.0.2"]


def test_credentials_are_required_when_set(echo: tuple[int, list[str]]) -> None:
    port, peers = echo
    with ConnectProxy(credentials=("user", "s3cret")) as proxy:
        assert proxy.url == f"http://user:s3cret@127.0.0.1:{proxy.port}"
        sock, head = connect(proxy, f"127.0.0.1:{port}")
        sock.close()
        assert head.startswith(b"HTTP/1.1 407 ") and b"Proxy-Authenticate: Basic" in head
        good = "Basic " + base64.b64encode(b"user:s3cret").decode()
        sock, head = connect(proxy, f"127.0.0.1:{port}", auth=good)
        sock.close()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert [(t.authenticated, t.established) for t in proxy.tunnels] == [(False, False), (True, True)]
    assert peers == ["127.0.0.2"]


def test_only_connect_and_reachable_targets() -> None:
    with ConnectProxy() as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 405 ")
        sock.close()
        closed = socket.create_server(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
        closed.close()
        sock, head = connect(proxy, f"127.0.0.1:{free_port}")
        sock.close()
        assert head.startswith(b"HTTP/1.1 502 ")
        assert proxy.tunnels == [Tunnel(f"127.0.0.1:{free_port}", authenticated=False, established=False)]
