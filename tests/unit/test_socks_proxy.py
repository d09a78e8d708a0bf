"""The tests' SOCKS5 proxy (tests/support/socks_proxy.py), driven by python-socks' real client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from python_socks import ProxyError, ProxyType
from python_socks.sync import Proxy

from tests.support.connect_proxy import Tunnel
from tests.support.socks_proxy import SocksProxy


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


def client(proxy: SocksProxy, credentials: tuple[str, str] | None, *, rdns: bool = True) -> Proxy:
    """python-socks' client for `proxy` (`rdns`: let the proxy resolve names, as socks5h:// does)."""
    user, password = credentials or (None, None)
    return Proxy(ProxyType.SOCKS5, "127.0.0.1", proxy.port, username=user, password=password, rdns=rdns)


@pytest.mark.parametrize(("scheme", "host"), [("socks5h", "localhost"), ("socks5", "127.0.0.1")])
def test_a_tunnel_leaves_from_the_source_address(echo: tuple[int, list[str]], scheme: str, host: str) -> None:
    port, peers = echo
    with SocksProxy(scheme=scheme, credentials=("op", "p@ss word")) as proxy:
        assert proxy.url == f"{scheme}://op:p%40ss%20word@127.0.0.1:{proxy.port}"
        with client(proxy, ("op", "p@ss word"), rdns=scheme == "socks5h").connect("localhost", port) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
    assert proxy.tunnels == [Tunnel(f"{host}:{port}", authenticated=True, established=True)]
    assert peers == ["127.0.0.2"]


def test_without_the_credentials_no_tunnel_opens(echo: tuple[int, list[str]]) -> None:
    port, peers = echo
    with SocksProxy(credentials=("op", "secret")) as proxy:
        for credentials in (None, ("op", "wrong")):
            with pytest.raises(ProxyError):
                client(proxy, credentials).connect("localhost", port)
    assert not any(tunnel.established for tunnel in proxy.tunnels) and peers == []
