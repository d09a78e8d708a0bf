"""The account's secrets stay with the upstream: no redirect carries its cookies elsewhere, and
no handshake header, Set-Cookie or tokened URL reaches an error chain that RQ would store.

Real sockets on loopback: a bare TCP server answers the websocket upgrade as a hostile or
confused upstream would, and a second one records whether anything was sent on to it.
"""

from __future__ import annotations

import socket
import threading
import traceback
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from service.runtime.embedded_redis import free_port
from workers.upstream.errors import Unauthorized, UpstreamError
from workers.upstream.plain_transport import http_request
from workers.upstream.transport import WebSocketTransport

COOKIE = "_U=ACCOUNT-COOKIE-SECRET"
SET_COOKIE = "session=SET-COOKIE-SECRET; Path=/"


class RawServer:
    """Accepts connections on 127.0.0.1, records each request's head, answers with `reply`."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                self.requests.append(head.decode("latin-1"))
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


def serve(servers: list[RawServer], reply: bytes) -> RawServer:
    server = RawServer(reply)
    servers.append(server)
    return server


def rejected(status: str) -> bytes:
    body = b"BODY-SECRET-echoing-the-request"
    return (
        f"HTTP/1.1 {status}\r\nSet-Cookie: {SET_COOKIE}\r\nX-Upstream-Token: HEADER-SECRET\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def open_socket(url: str) -> None:
    """What a turn does first: open the upstream websocket with the account's cookie."""
    transport = WebSocketTransport()
    try:
        transport.open(url, headers={"Cookie": COOKIE, "Origin": "https://copilot.microsoft.com"}, timeout=5)
    finally:
        transport.close()


def full_text(exc: BaseException) -> str:
    """Every exception message in the chain, as a traceback would print them (no source lines)."""
    lines = [line for line in traceback.format_exception(exc) if not line.startswith("  ")]
    return "".join(lines)


def test_the_websocket_never_follows_a_redirect(servers: list[RawServer]) -> None:
    elsewhere = serve(servers, rejected("403 Forbidden"))
    redirect = serve(
        servers,
        f"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:{elsewhere.port}/steal\r\n"
        "Content-Length: 0\r\n\r\n".encode(),
    )
    with pytest.raises(UpstreamError, match="redirect") as raised:
        open_socket(f"ws://127.0.0.1:{redirect.port}/c/api/chat?accessToken=TOKEN-SECRET")
    assert COOKIE in redirect.requests[0]  # the real upstream got the account's cookie...
    assert elsewhere.requests == []  # ...and nobody else did
    assert "TOKEN-SECRET" not in full_text(raised.value)


def test_a_refused_handshake_chains_only_its_status(servers: list[RawServer]) -> None:
    upstream = serve(servers, rejected("403 Forbidden"))
    with pytest.raises(Unauthorized) as raised:
        open_socket(f"ws://127.0.0.1:{upstream.port}/c/api/chat")
    assert getattr(raised.value.__cause__, "status_code", None) == 403
    text = full_text(raised.value)
    for secret in ("SET-COOKIE-SECRET", "HEADER-SECRET", "BODY-SECRET", "ACCOUNT-COOKIE-SECRET"):
        assert secret not in text


def test_rq_stores_no_handshake_headers_in_a_failed_jobs_exc_info(
    servers: list[RawServer], redis_client: Redis
) -> None:
    upstream = serve(servers, rejected("429 Too Many Requests"))
    queue = Queue("secrets", connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue(
        "tests.unit.test_upstream_secrets.open_socket",
        f"ws://127.0.0.1:{upstream.port}/ws?token=TOKEN-SECRET",
    )
    SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer).work(burst=True)
    job.refresh()
    assert job.is_failed
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    stored = result.exc_string
    assert "Throttled" in stored
    for secret in ("SET-COOKIE-SECRET", "HEADER-SECRET", "BODY-SECRET", "TOKEN-SECRET", "ACCOUNT-COOKIE"):
        assert secret not in stored


def test_rest_calls_return_redirects_unfollowed(servers: list[RawServer]) -> None:
    elsewhere = serve(servers, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    redirect = serve(
        servers,
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere.port}/steal\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode(),
    )
    status, headers, _ = http_request(
        "POST", f"http://127.0.0.1:{redirect.port}/c/api/start", headers={"Cookie": COOKIE}, timeout=5
    )
    assert status == 307 and headers["Location"].endswith("/steal")
    assert elsewhere.requests == []


def test_a_failed_rest_call_does_not_chain_its_tokened_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/turing/conversation/create?sec_access_token=TOKEN-SECRET"
    with pytest.raises(UpstreamError) as raised:
        http_request("GET", url, headers={"Cookie": COOKIE}, timeout=5, retries=0)
    assert "TOKEN-SECRET" not in full_text(raised.value)
