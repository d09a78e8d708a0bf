"""The browser transport's REST calls speak HTTP/2, with its browser's SETTINGS, where the server offers it.

Issue #15 wants the "ALPN and HTTP/2 settings" of the account's browser on every REST call.
The simulator serves HTTP/1.1 only (its `websockets` server speaks nothing else, and no
HTTP/2 library is in the locks), so its ALPN record shows what a client *offers*, not what
it speaks. Here a bare TLS origin offers `h2,http/1.1`, reads the client's first bytes and
hangs up: the browser transport must pick `h2` and open with the connection preface and the
SETTINGS frame its browser sends (values as curl_cffi 0.17.0 sends them, which are Chrome's
and Firefox's own); the plain transport stays on HTTP/1.1.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.accounts.identity import Identity, default_identity, resolve
from tests.simulator.tls_certs import CERT_FILE, KEY_FILE, write_certificates
from workers.upstream.errors import UpstreamError
from workers.upstream.wire import build_transport

pytestmark = pytest.mark.timeout(30)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_FRAME = 0x4
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"
# SETTINGS ids: HEADER_TABLE_SIZE 1, ENABLE_PUSH 2, INITIAL_WINDOW_SIZE 4, MAX_FRAME_SIZE 5,
# MAX_HEADER_LIST_SIZE 6.
CHROME_SETTINGS = [(1, 65536), (2, 0), (4, 6291456), (6, 262144)]
FIREFOX_SETTINGS = [(1, 65536), (2, 0), (4, 131072), (5, 16384)]


class H2Origin:
    """A TLS listener offering ALPN `h2,http/1.1`; records (chosen ALPN, first bytes) per connection."""

    def __init__(self, directory: Path) -> None:
        self.ca_file = str(write_certificates(directory))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[tuple[str | None, bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(2)
                    data = conn.recv(4096)
                    while len(data) < len(PREFACE) + 9 and (chunk := conn.recv(4096)):
                        data += chunk
                    self.seen.append((conn.selected_alpn_protocol(), data))
            except OSError:
                continue

    def settings(self, data: bytes) -> list[tuple[int, int]]:
        """The (id, value) pairs of the SETTINGS frame that follows the preface."""
        header = data[len(PREFACE) : len(PREFACE) + 9]
        length, kind = int.from_bytes(header[:3], "big"), header[3]
        assert kind == SETTINGS_FRAME
        payload = data[len(PREFACE) + 9 : len(PREFACE) + 9 + length]
        return [struct.unpack("!HI", payload[i : i + 6]) for i in range(0, length, 6)]


@pytest.fixture()
def origin(tmp_path: Path) -> Iterator[H2Origin]:
    server = H2Origin(tmp_path)
    yield server
    server.listener.close()


def call(origin: H2Origin, kind: str, identity: Identity) -> tuple[str | None, bytes]:
    key = f"h2-{kind}-{identity.impersonate}"
    transport = build_transport(kind, identity=identity, ca_file=origin.ca_file, key=key)
    url = f"https://localhost:{origin.port}/c/api/user"
    with pytest.raises(UpstreamError):  # the origin hangs up after reading: no answer, by design
        transport.request("GET", url, headers={}, timeout=3, retries=0)
    return origin.seen[-1]


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [("", CHROME_SETTINGS), (FIREFOX, FIREFOX_SETTINGS)],
    ids=["chrome", "firefox"],
)
def test_browser_rest_calls_negotiate_h2_with_their_browsers_settings(
    origin: H2Origin, user_agent: str, expected: list[tuple[int, int]]
) -> None:
    identity = resolve(user_agent, {}, "en-US")[0] if user_agent else default_identity()
    alpn, data = call(origin, "browser", identity)
    assert alpn == "h2" and data.startswith(PREFACE)
    assert origin.settings(data) == expected


def test_plain_rest_calls_stay_on_http_1_1(origin: H2Origin) -> None:
    alpn, data = call(origin, "plain", default_identity())
    assert alpn == "http/1.1" and data.startswith(b"GET /c/api/user HTTP/1.1\r\n")
