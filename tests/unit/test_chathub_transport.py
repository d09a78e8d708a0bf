"""BingClient and the transport over real sockets, against a throwaway scripted ChatHub on loopback.

Each test scripts the server side of one websocket (and, where needed, the create
endpoint) in a few lines, so deadlines, cancellation and socket failures are tested
for real without depending on the full simulator.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.server import ServerConnection

from tests.support.scripted_ws import ScriptedServer
from workers.upstream import chathub, chathub_conversation
from workers.upstream.chathub_client import BingClient
from workers.upstream.chathub_conversation import BingHandle
from workers.upstream.context import TurnInput
from workers.upstream.errors import (
    Interrupted,
    Throttled,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from workers.upstream.events import Done, Limits, Suggestions, TextDelta
from workers.upstream.plain_transport import http_get

RS = "\x1e"
CONV = "51D|BingProd|9DA70F50D679FEE0C91F081A07D7DCCC4ADF946CE04399477F12708686E2AE07"
ENC = "enc-XYZ+/="
COOKIES = "_U=secret; MUID=abc"
THROTTLING = {"maxNumUserMessagesInConversation": 30, "numUserMessagesInConversation": 1}
EXPIRY = "2024-02-05T14:00:07.2264051Z"

pytestmark = pytest.mark.timeout(10)


def bot(text: str) -> dict[str, Any]:
    return {"text": text, "author": "bot", "messageId": "m1", "contentOrigin": "DeepLeo"}


def update(text: str) -> str:
    return chathub.encode({"type": 1, "target": "update", "arguments": [{"messages": [bot(text)]}]})


def final(text: str, invocation: str = "0") -> str:
    item = {
        "messages": [
            {"text": "Say hi", "author": "user"},
            {**bot(text), "suggestedResponses": [{"text": "More"}]},
        ],
        "conversationId": CONV,
        "conversationExpiryTime": EXPIRY,
        "throttling": THROTTLING,
        "result": {"value": "Success", "message": "Say hi"},
    }
    return chathub.encode({"type": 2, "invocationId": invocation, "item": item}) + chathub.encode(
        {"type": 3, "invocationId": invocation}
    )


class Hub(ScriptedServer):
    """A scripted ChatHub websocket server: one `script(ws)` call per connection."""

    def __init__(self, script: Callable[[ServerConnection], None], reject: int | None = None) -> None:
        super().__init__(script, reject)
        self.received: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/sydney/ChatHub"

    def recv(self, ws: ServerConnection) -> str:
        message = ws.recv()
        assert isinstance(message, str)
        self.received.append(message)
        return message

    def handshake(self, ws: ServerConnection, *extra: str) -> dict[str, Any]:
        """Do the client's handshake; returns the chat invocation it sent."""
        assert self.recv(ws) == chathub.HANDSHAKE
        ws.send("{}" + RS + "".join(extra))
        assert self.recv(ws) == chathub.PING
        (record,) = chathub.split_records(self.recv(ws))
        return record

    def wait_for_client_close(self, ws: ServerConnection) -> None:
        while True:
            self.recv(ws)  # raises ConnectionClosed when the client goes


class CreateEndpoint(http.server.ThreadingHTTPServer):
    """A scripted conversation-create endpoint: answers are popped in order."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), _CreateHandler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/turing/conversation/create"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _CreateHandler(http.server.BaseHTTPRequestHandler):
    server: CreateEndpoint

    def do_GET(self) -> None:
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        time.sleep(self.server.delay)
        status, headers, body = self.server.answers.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


CREATED = (
    200,
    {
        "Content-Type": "application/json",
        "X-Sydney-Conversationsignature": "sig-abc",
        "X-Sydney-Encryptedconversationsignature": ENC,
    },
    json.dumps(
        {"conversationId": CONV, "clientId": "844426658913453", "result": {"value": "Success"}}
    ).encode(),
)


@pytest.fixture()
def make_hub() -> Iterator[Callable[..., Hub]]:
    hubs: list[Hub] = []

    def make(script: Callable[[ServerConnection], None] = lambda ws: None, reject: int | None = None) -> Hub:
        hubs.append(Hub(script, reject))
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture()
def make_endpoint() -> Iterator[Callable[..., CreateEndpoint]]:
    endpoints: list[CreateEndpoint] = []

    def make(*answers: tuple[int, dict[str, str], bytes], delay: float = 0.0) -> CreateEndpoint:
        endpoints.append(CreateEndpoint(list(answers), delay))
        return endpoints[-1]

    yield make
    for endpoint in endpoints:
        endpoint.stop()


def client(chathub_url: str, create_url: str = "http://127.0.0.1:9/create", **overrides: Any) -> BingClient:
    options: dict[str, Any] = {
        "create_url": create_url,
        "chathub_url": chathub_url,
        "cookies": COOKIES,
        "connect_timeout": 2.0,
        "first_token_timeout": 3.0,
        "idle_timeout": 3.0,
    }
    options.update(overrides)
    return BingClient(**options)


def a_handle(invocation: int = 0) -> BingHandle:
    return BingHandle(
        CONV, "844426658913453", "sig-abc", ENC, expires_at=time.time() + 3600, invocation=invocation
    )


TURN = TurnInput("Say hi", "Balanced", history=(("user", "earlier"), ("assistant", "reply")))


# --- happy path ----------------------------------------------------------------------------


def test_create_then_two_turns(
    make_hub: Callable[..., Hub], make_endpoint: Callable[..., CreateEndpoint]
) -> None:
    invocations: list[dict[str, Any]] = []

    def script(ws: ServerConnection) -> None:
        invocations.append(hub.handshake(ws))
        number = invocations[-1]["invocationId"]
        ws.send(chathub.encode({"type": 1, "target": "update", "arguments": [{"throttling": THROTTLING}]}))
        ws.send(update("Hi") + chathub.PING)
        ws.send(update("Hi there!"))
        ws.send(update("Hi there! How can I help today? 😊"))
        ws.send(final("Hi there! How can I help today? 😊", number))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    endpoint = make_endpoint(CREATED)
    bing = client(hub.url, endpoint.url)

    handle = bing.create_conversation(account="env-2")
    assert (handle.conversation_id, handle.conversation_signature, handle.account) == (
        CONV,
        "sig-abc",
        "env-2",
    )
    path, headers = endpoint.requests[0]
    assert path == "/turing/conversation/create?bundleVersion=1.1816.0"
    assert headers["cookie"] == COOKIES
    assert headers["accept"] == "application/json"
    assert "Mozilla" in headers["user-agent"] and headers["x-ms-client-request-id"]

    events = list(bing.stream_turn(handle, TURN))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Hi",
        " there!",
        " How can I help today? 😊",
    ]
    assert events[-3:] == [Suggestions(("More",)), Limits(1, 30), Done("Hi there! How can I help today? 😊")]
    assert hub.closed.wait(2)
    assert hub.paths[0] == "/sydney/ChatHub?sec_access_token=enc-XYZ%2B%2F%3D"
    assert hub.headers[0]["origin"] == "https://www.bing.com"
    assert hub.headers[0]["cookie"] == COOKIES
    assert "Mozilla" in hub.headers[0]["user-agent"]
    first = invocations[0]["arguments"][0]
    assert invocations[0]["invocationId"] == "0"
    assert first["isStartOfSession"] is True
    assert "[user](#message)\nearlier" in first["previousMessages"][0]["description"]
    assert (handle.invocation, handle.turns_used, handle.turns_max) == (1, 1, 30)
    assert handle.expires_at == chathub_conversation.parse_expiry(EXPIRY)

    hub.closed.clear()
    events = list(bing.stream_turn(handle, TurnInput("And again", "Balanced")))
    assert isinstance(events[-1], Done)
    second = invocations[1]["arguments"][0]
    assert invocations[1]["invocationId"] == "1"
    assert second["isStartOfSession"] is False
    assert "previousMessages" not in second
    assert handle.invocation == 2


def test_sends_its_own_pings_while_the_upstream_thinks(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Thinking"))
        time.sleep(1.0)
        ws.send(final("Thinking done"))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    events = list(client(hub.url, ping_interval=0.3).stream_turn(a_handle(), TURN))
    assert events[-1] == Done("Thinking done")
    assert hub.received.count(chathub.PING) >= 3  # one after the handshake, then keepalives


# --- deadlines ---------------------------------------------------------------------------


def test_first_token_timeout(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(chathub.encode({"type": 1, "target": "update", "arguments": [{"throttling": THROTTLING}]}))
        hub.wait_for_client_close(ws)  # never answers

    hub = make_hub(script)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="did not start"):
        list(client(hub.url, first_token_timeout=0.6).stream_turn(a_handle(), TURN))
    assert 0.5 < time.monotonic() - started < 2.0
    assert hub.closed.wait(1)


def test_idle_timeout_mid_answer(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Hi"))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    received: list[Any] = []
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="silent"):
        for event in client(hub.url, first_token_timeout=5.0, idle_timeout=0.5).stream_turn(a_handle(), TURN):
            received.append(event)
    assert received == [TextDelta("Hi")]
    assert time.monotonic() - started < 2.0


# --- cancellation ----------------------------------------------------------------------------


def test_should_stop_closes_the_socket_within_a_second(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Hi"))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    stop = threading.Event()
    stopped_at = 0.0
    events = []
    for event in client(hub.url, first_token_timeout=5.0, idle_timeout=5.0).stream_turn(
        a_handle(), TURN, should_stop=stop.is_set
    ):
        events.append(event)
        stopped_at = time.monotonic()
        stop.set()
    assert events == [TextDelta("Hi")]  # ended without Done
    assert hub.closed.wait(2)
    assert hub.closed_at - stopped_at < 1.0


def test_consumer_closing_the_generator_closes_the_socket(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Hi"))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    stream = client(hub.url).stream_turn(a_handle(), TURN)
    assert next(stream) == TextDelta("Hi")
    stream.close()
    assert hub.closed.wait(1)


# --- socket failures ---------------------------------------------------------------------


def test_abrupt_close_mid_answer_is_interrupted_with_partial(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Half an"))
        ws.send(update("Half an answer"))
        time.sleep(0.1)
        ws.close_socket()

    hub = make_hub(script)
    with pytest.raises(Interrupted) as caught:
        list(client(hub.url).stream_turn(a_handle(), TURN))
    assert caught.value.partial == "Half an answer"


def test_server_close_frame_mid_answer_is_interrupted(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Half"))
        ws.close()

    hub = make_hub(script)
    with pytest.raises(Interrupted) as caught:
        list(client(hub.url).stream_turn(a_handle(), TURN))
    assert caught.value.partial == "Half"


def test_type7_close_is_interrupted(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.send(update("Half"))
        ws.send(
            chathub.encode({"type": 7, "error": "Connection closed with an error.", "allowReconnect": True})
        )
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    with pytest.raises(Interrupted, match="closed with an error") as caught:
        list(client(hub.url).stream_turn(a_handle(), TURN))
    assert caught.value.partial == "Half"


def test_close_before_any_text_is_an_upstream_error(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.handshake(ws)
        ws.close()

    hub = make_hub(script)
    with pytest.raises(UpstreamError, match="without replying") as caught:
        list(client(hub.url).stream_turn(a_handle(), TURN))
    assert not isinstance(caught.value, Interrupted)


def test_handshake_error_record(make_hub: Callable[..., Hub]) -> None:
    def script(ws: ServerConnection) -> None:
        hub.recv(ws)
        ws.send(chathub.encode({"error": "Handshake was canceled."}))
        hub.wait_for_client_close(ws)

    hub = make_hub(script)
    with pytest.raises(UpstreamError, match="Handshake was canceled"):
        list(client(hub.url).stream_turn(a_handle(), TURN))


@pytest.mark.parametrize(
    ("status", "error"), [(401, Unauthorized), (403, Unauthorized), (429, Throttled), (502, UpstreamError)]
)
def test_upgrade_rejections(make_hub: Callable[..., Hub], status: int, error: type[Exception]) -> None:
    hub = make_hub(reject=status)
    with pytest.raises(error) as caught:
        list(client(hub.url).stream_turn(a_handle(), TURN))
    assert str(status) in str(caught.value)
    assert ENC not in str(caught.value) and "sec_access_token" not in str(caught.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused() -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="refused"):
        list(client(f"ws://127.0.0.1:{free_port()}/sydney/ChatHub").stream_turn(a_handle(), TURN))
    assert time.monotonic() - started < 2.0


# --- HTTP ----------------------------------------------------------------------------------


def test_create_404_is_throttled(make_endpoint: Callable[..., CreateEndpoint]) -> None:
    endpoint = make_endpoint((404, {}, b""))
    with pytest.raises(Throttled):
        client("ws://unused", endpoint.url).create_conversation()


def test_http_get_retries_5xx_then_succeeds(make_endpoint: Callable[..., CreateEndpoint]) -> None:
    endpoint = make_endpoint((503, {}, b"busy"), (502, {}, b"busy"), (200, {"X-A": "1"}, b"ok"))
    pauses: list[float] = []
    status, headers, body = http_get(endpoint.url, headers={}, timeout=2.0, sleep=pauses.append)
    assert (status, headers["x-a"], body) == (200, "1", b"ok")
    assert len(pauses) == 2


def test_the_shared_session_never_carries_one_accounts_cookies_to_another(
    make_endpoint: Callable[..., CreateEndpoint],
) -> None:
    endpoint = make_endpoint((200, {"Set-Cookie": "MUIDB=account-a; Path=/"}, b"a"), (200, {}, b"b"))
    http_get(endpoint.url, headers={"Cookie": "_U=account-a"}, timeout=2.0)
    http_get(endpoint.url, headers={}, timeout=2.0)  # an anonymous account
    assert [headers.get("cookie") for _, headers in endpoint.requests] == ["_U=account-a", None]


def test_http_get_returns_the_last_5xx_when_retries_run_out(
    make_endpoint: Callable[..., CreateEndpoint],
) -> None:
    endpoint = make_endpoint(*[(503, {}, b"busy")] * 3)
    status, _, _ = http_get(endpoint.url, headers={}, timeout=2.0, sleep=lambda _: None)
    assert status == 503


def test_http_get_timeout(make_endpoint: Callable[..., CreateEndpoint]) -> None:
    endpoint = make_endpoint(CREATED, delay=1.0)
    with pytest.raises(UpstreamTimeout):
        http_get(endpoint.url, headers={}, timeout=0.2, sleep=lambda _: None)


def test_http_get_connection_refused_after_retries() -> None:
    pauses: list[float] = []
    with pytest.raises(UpstreamError, match="cannot reach"):
        http_get(f"http://127.0.0.1:{free_port()}/create", headers={}, timeout=1.0, sleep=pauses.append)
    assert len(pauses) == 2
