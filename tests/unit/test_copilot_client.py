"""CopilotClient over real sockets, against a throwaway scripted Copilot on loopback.

Each test scripts the server side of one `/c/api/chat` websocket (or the REST create
endpoint) in a few lines, replaying the reference's recorded sequences (B7), so the
turn choreography, deadlines, cancellation and socket failures are tested for real
without depending on the simulator.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import ServerConnection

from service.runtime.settings import Settings
from tests.support.scripted_ws import ScriptedServer
from workers.upstream import Credentials, build_client, load_handle
from workers.upstream.context import TurnInput
from workers.upstream.copilot_client import CopilotClient
from workers.upstream.copilot_conversation import CopilotHandle
from workers.upstream.copilot_failures import InvalidEvent
from workers.upstream.errors import (
    ChallengeRequired,
    ConversationExpired,
    Interrupted,
    Throttled,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from workers.upstream.events import Done, Image, Progress, Suggestions, TextDelta

CONV = "dRUXwuM545tff65JPZ3rn"
BOT_ID = "cunqiwyXHxKALffniSEnf"
COOKIES = "__Host-copilot-anon=anon-secret; cf_clearance=cf-secret"
TOKEN = "eyJ0eXAi.secret+token/="
SEED = "269f08c72d841a24d839b0d55d2dadbb3551d7f89d35991f4bef499c893b253d"
IMAGE_URL = "https://copilot.microsoft.com/th/id/BCO.42a11350-302d-46b2-909f-43b45f2b15d5.png"

pytestmark = pytest.mark.timeout(10)


def frame(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields})


def answer(*texts: str, message_id: str = BOT_ID, suggestions: bool = True) -> list[str]:
    """The server side of B7.1 after the `send`, with the given text deltas."""
    frames = [
        frame("received", conversationId=CONV, messageId="17Wzuonj3Q54L3oYsbPdC", id="0"),
        frame("startMessage", conversationId=CONV, messageId=message_id, id="1"),
        *(frame("appendText", messageId=message_id, partId="0", text=text, id="2") for text in texts),
        frame("partCompleted", messageId=message_id, partId="0", id="5"),
        frame("done", messageId=message_id, id="6"),
        frame("titleUpdate", conversationId=CONV, title="Test message receipt confirmation", id="7"),
    ]
    if suggestions:
        frames.append(frame("suggestedFollowups", messageId=message_id, suggestions=["Tell me more"], id="8"))
    return frames


class Copilot(ScriptedServer):
    """A scripted `/c/api/chat` websocket server: one `script(ws)` call per connection."""

    def __init__(self, script: Callable[[ServerConnection], None], reject: int | None = None) -> None:
        super().__init__(script, reject)
        self.received: list[dict[str, Any]] = []
        self.raw: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def recv(self, ws: ServerConnection, timeout: float | None = None) -> dict[str, Any]:
        message = ws.recv(timeout)
        assert isinstance(message, str)
        assert "\x1e" not in message
        self.raw.append(message)
        self.received.append(json.loads(message))
        return self.received[-1]

    def preamble(self, ws: ServerConnection) -> dict[str, Any]:
        """Read the client's three opening frames (B1.3); returns its `send`."""
        assert self.recv(ws)["event"] == "setOptions"
        assert self.recv(ws) == {"event": "reportLocalConsents", "grantedConsents": []}
        send = self.recv(ws)
        assert send["event"] == "send"
        return send

    def play(self, ws: ServerConnection, frames: list[str]) -> None:
        for message in frames:
            ws.send(message)

    def wait_for_client_close(self, ws: ServerConnection) -> None:
        while True:
            self.recv(ws)  # raises ConnectionClosed when the client goes

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event.get("event") == name]


class RestEndpoint(http.server.ThreadingHTTPServer):
    """A scripted `POST /c/api/conversations`: answers are popped in order."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _RestHandler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RestHandler(http.server.BaseHTTPRequestHandler):
    server: RestEndpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, payload = self.server.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def make_server() -> Iterator[Callable[..., Copilot]]:
    servers: list[Copilot] = []

    def make(
        script: Callable[[ServerConnection], None] = lambda ws: None, reject: int | None = None
    ) -> Copilot:
        servers.append(Copilot(script, reject))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def client(base_url: str, **overrides: Any) -> CopilotClient:
    options: dict[str, Any] = {
        "base_url": base_url,
        "cookies": COOKIES,
        "access_token": TOKEN,
        "connect_timeout": 2.0,
        "first_token_timeout": 3.0,
        "idle_timeout": 3.0,
        "connected_wait": 1.0,
        "done_drain": 0.3,
    }
    options.update(overrides)
    return CopilotClient(**options)


TURN = TurnInput("This is an automated test message.", history=(("user", "earlier"), ("assistant", "reply")))


def run(copilot_client: CopilotClient, handle: CopilotHandle | None = None, **kwargs: Any) -> list[Any]:
    return list(copilot_client.stream_turn(handle or CopilotHandle(CONV), TURN, **kwargs))


# --- happy paths ------------------------------------------------------------------------------------


def test_waits_for_connected_then_speaks_once_and_streams_b71(make_server: Callable[..., Copilot]) -> None:
    sends: list[dict[str, Any]] = []

    def script(ws: ServerConnection) -> None:
        try:  # a strict 2026 server: anything before `connected` is an invalid-event
            server.recv(ws, timeout=0.3)
            ws.send(frame("error", errorCode="invalid-event", id="0.0002"))
            return
        except TimeoutError:
            pass
        ws.send(frame("connected"))
        sends.append(server.preamble(ws))
        server.play(ws, answer("Received", "! Test", " successful. Feel free.\n"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    copilot_client = client(server.base_url)
    handle = CopilotHandle(CONV, account="env-2")
    events = list(copilot_client.stream_turn(handle, TURN))

    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Received",
        "! Test",
        " successful. Feel free.\n",
    ]
    assert events[-2:] == [Suggestions(("Tell me more",)), Done("Received! Test successful. Feel free.\n")]
    assert handle.turns == 1 and not handle.fresh
    assert server.closed.wait(2)

    url = urlsplit(server.paths[0])
    query = parse_qs(url.query)
    assert url.path == "/c/api/chat"
    assert query["api-version"] == ["2"] and len(query["clientSessionId"][0]) == 36
    assert query["accessToken"] == [TOKEN]
    assert query["features"] == ["-,ncedge,edgepagecontext"] and query["ncedge"] == ["1"]
    assert server.origins[0] == ["https://copilot.microsoft.com"]  # exactly once
    assert server.headers[0]["cookie"] == COOKIES and "Mozilla" in server.headers[0]["user-agent"]
    first = sends[0]
    assert (first["conversationId"], first["mode"]) == (CONV, "chat")
    assert first["content"] == [{"type": "text", "text": TURN.text}]
    assert "[user](#message)\nearlier" in first["context"]["edge"]["pageContent"]

    server.closed.clear()
    events = list(copilot_client.stream_turn(handle, TurnInput("And again", mode="smart")))
    assert isinstance(events[-1], Done) and handle.turns == 2
    second = sends[1]
    assert (second["context"], second["mode"]) == ({}, "smart")
    assert "features" not in parse_qs(urlsplit(server.paths[1]).query)
    # clientSessionId is a uuid4 new per socket (B1.2): the second socket does not reuse the first's.
    first_id, second_id = (parse_qs(urlsplit(path).query)["clientSessionId"][0] for path in server.paths[:2])
    assert first_id != second_id and {uuid.UUID(first_id).version, uuid.UUID(second_id).version} == {4}


def test_a_server_that_never_says_connected_is_spoken_to_after_the_wait(
    make_server: Callable[..., Copilot],
) -> None:
    def script(ws: ServerConnection) -> None:
        server.preamble(ws)
        server.play(ws, answer("Hi"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    started = time.monotonic()
    events = run(client(server.base_url, connected_wait=0.4))
    assert events[-1] == Done("Hi")
    assert 0.35 < time.monotonic() - started < 2.0


def test_a_second_connected_does_not_replay_the_preamble(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        ws.send(frame("connected"))
        server.preamble(ws)
        ws.send(frame("connected"))
        server.play(ws, answer("Hi", suggestions=False))
        ws.close()

    server = make_server(script)
    events = run(client(server.base_url))
    assert events[-1] == Done("Hi")  # `done` then a close: success without waiting out the drain
    assert server.closed.wait(2)
    assert [e["event"] for e in server.received] == ["setOptions", "reportLocalConsents", "send"]


def test_done_without_suggestions_ends_after_the_drain(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("Hi", suggestions=False))
        server.wait_for_client_close(ws)

    server = make_server(script)
    started = time.monotonic()
    events = run(client(server.base_url, done_drain=0.3))
    assert events[-1] == Done("Hi")
    assert 0.25 < time.monotonic() - started < 1.5


def test_events_cut_across_messages_and_concatenated_are_read(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected") + "\x1e")
        server.preamble(ws)
        text = "".join(answer("Hi", " there"))
        for cut in range(0, len(text), 37):  # arbitrary cuts, mid-key and mid-string
            ws.send(text[cut : cut + 37])
        server.wait_for_client_close(ws)

    server = make_server(script)
    events = run(client(server.base_url))
    assert events[-2:] == [Suggestions(("Tell me more",)), Done("Hi there")]


# --- challenges ----------------------------------------------------------------------------------


def test_b74_hashcash_is_answered_and_the_send_re_sent(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        first_send = server.raw[-1]
        ws.send(frame("challenge", method="hashcash", parameter=f"{SEED}:1", id="0.1"))
        assert server.recv(ws) == {
            "event": "challengeResponse",
            "token": "0",
            "method": "hashcash",
            "id": "0.1",
        }
        server.recv(ws)
        assert server.raw[-1] == first_send  # the identical held frame
        server.play(ws, answer("PROBE", "-OK"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    events = run(client(server.base_url))
    assert events[-1] == Done("PROBE-OK")
    assert server.closed.wait(2)
    assert [e["event"] for e in server.received] == [
        "setOptions",
        "reportLocalConsents",
        "send",
        "challengeResponse",
        "send",
    ]


@pytest.mark.parametrize("method", [None, "cloudflare"])
def test_browser_challenge_fails_fast_without_answering(
    make_server: Callable[..., Copilot], method: str | None
) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        ws.send(frame("challenge", method=method, parameter=None, id="1"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    started = time.monotonic()
    with pytest.raises(ChallengeRequired, match="clearance required"):
        run(client(server.base_url))
    assert time.monotonic() - started < 1.0
    assert server.closed.wait(2)
    assert not server.events("challengeResponse")


def test_b73_throttle_uses_next_available_at_and_the_injected_clock(
    make_server: Callable[..., Copilot],
) -> None:
    next_available = "2026-08-13T15:17:13+00:00"
    moment = datetime.fromisoformat(next_available).timestamp()

    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        detail = {"type": "throttled", "nextAvailableAt": next_available}
        ws.send(
            frame("chatMessageError", errorCode="throttled", errorDetail=detail)
            + frame("challenge", method=None, parameter=None, id="0.0002")
        )
        server.wait_for_client_close(ws)

    server = make_server(script)
    with pytest.raises(Throttled) as caught:
        run(client(server.base_url, clock=lambda: moment - 120))
    assert caught.value.retry_after == pytest.approx(120)


def test_invalid_event_is_logged_with_redacted_frames(
    make_server: Callable[..., Copilot], caplog: pytest.LogCaptureFixture
) -> None:
    def script(ws: ServerConnection) -> None:
        server.preamble(ws)
        ws.send(frame("error", errorCode="invalid-event", id="0.0002", accessToken=TOKEN, note="cf-secret"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    with (
        caplog.at_level(logging.WARNING, logger="workers.upstream.copilot_client"),
        pytest.raises(InvalidEvent),
    ):
        run(client(server.base_url, connected_wait=0.1))
    (record,) = [r for r in caplog.records if "copilot_invalid_event" in r.getMessage()]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "C→" in text and "setOptions" in text and '"event":"send"' in text and "invalid-event" in text
    assert "S→" in text
    for secret in (TOKEN, "secret+token", "cf-secret", "anon-secret", "automated test message", "earlier"):
        assert secret not in text
    assert all(TOKEN not in r.getMessage() and "cf-secret" not in r.getMessage() for r in caplog.records)


def test_invalid_event_on_a_continued_conversation_means_copilot_forgot_it(
    make_server: Callable[..., Copilot],
) -> None:
    def script(ws: ServerConnection) -> None:
        server.preamble(ws)
        ws.send(frame("error", errorCode="invalid-event", id="0.0002"))
        server.wait_for_client_close(ws)

    server = make_server(script)
    with pytest.raises(ConversationExpired) as caught:  # the turn runner rolls over on this
        run(client(server.base_url, connected_wait=0.1), CopilotHandle(CONV, turns=3))
    assert isinstance(caught.value.__cause__, InvalidEvent)
    with pytest.raises(InvalidEvent):  # on a fresh conversation it stays a protocol error
        run(client(server.base_url, connected_wait=0.1), CopilotHandle(CONV, turns=0))


# --- images and failures mid-stream -----------------------------------------------------------------


def test_image_turn_ending_in_a_bare_close_is_success(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("Sure, here it is.", suggestions=False)[:3])
        part = {"messageId": BOT_ID, "partId": "DEGVe5ihRQZsTpQnMNztR"}
        ws.send(frame("generatingImage", prompt="a red apple", progressionText="Bringing…", **part))
        ws.send(frame("partialImageGenerated", content="/9j/4AAQ", **part))
        ws.send(frame("imageGenerated", url=IMAGE_URL, thumbnailUrl=f"{IMAGE_URL}?w=270", **part))
        time.sleep(0.1)
        ws.close()

    server = make_server(script)
    handle = CopilotHandle(CONV)
    events = run(client(server.base_url), handle)
    link = f"![a red apple]({IMAGE_URL})"
    assert events == [
        TextDelta("Sure, here it is."),
        Progress("image", "Bringing…"),
        Image(IMAGE_URL, "a red apple", f"{IMAGE_URL}?w=270"),
        TextDelta(f"\n\n{link}"),
        Done(f"Sure, here it is.\n\n{link}"),
    ]
    assert handle.turns == 1


def test_close_mid_answer_is_interrupted_with_partial(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("Half an", " answer")[:4])
        time.sleep(0.1)
        ws.close_socket()

    server = make_server(script)
    handle = CopilotHandle(CONV)
    with pytest.raises(Interrupted) as caught:
        run(client(server.base_url), handle)
    assert caught.value.partial == "Half an answer"
    assert handle.turns == 0


def test_close_before_any_text_is_closed_without_replying(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("x")[:2])
        ws.close()

    server = make_server(script)
    with pytest.raises(UpstreamError, match="closed the connection without replying") as caught:
        run(client(server.base_url))
    assert not isinstance(caught.value, Interrupted)


# --- deadlines and cancellation ------------------------------------------------------------------


def test_first_token_timeout(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("x")[:2])  # received, startMessage: not an answer yet
        server.wait_for_client_close(ws)

    server = make_server(script)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="did not start"):
        run(client(server.base_url, first_token_timeout=0.6))
    assert 0.5 < time.monotonic() - started < 2.0
    assert server.closed.wait(1)


def test_idle_timeout_mid_answer(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("Hi")[:3])
        server.wait_for_client_close(ws)

    server = make_server(script)
    received: list[Any] = []
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="silent"):
        for event in client(server.base_url, first_token_timeout=5.0, idle_timeout=0.5).stream_turn(
            CopilotHandle(CONV), TURN
        ):
            received.append(event)
    assert received == [TextDelta("Hi")]
    assert time.monotonic() - started < 2.0


def test_should_stop_closes_the_socket_within_a_second(make_server: Callable[..., Copilot]) -> None:
    def script(ws: ServerConnection) -> None:
        ws.send(frame("connected"))
        server.preamble(ws)
        server.play(ws, answer("Hi")[:3])
        server.wait_for_client_close(ws)

    server = make_server(script)
    stop = threading.Event()
    stopped_at = 0.0
    events = []
    for event in client(server.base_url, first_token_timeout=5.0, idle_timeout=5.0).stream_turn(
        CopilotHandle(CONV), TURN, should_stop=stop.is_set
    ):
        events.append(event)
        stopped_at = time.monotonic()
        stop.set()
    assert events == [TextDelta("Hi")]  # ended without Done
    assert server.closed.wait(2)
    assert server.closed_at - stopped_at < 1.0


# --- upgrade and REST --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_upgrade_rejection_is_unauthorized_without_leaking_the_token(
    make_server: Callable[..., Copilot], status: int
) -> None:
    server = make_server(reject=status)
    with pytest.raises(Unauthorized) as caught:
        run(client(server.base_url))
    message = str(caught.value)
    assert str(status) in message and "COPILOT_ACCESS_TOKEN" in message and "Bing" not in message
    assert "secret" not in message and "accessToken" not in message


@pytest.fixture()
def make_rest() -> Iterator[Callable[..., RestEndpoint]]:
    endpoints: list[RestEndpoint] = []

    def make(*answers: tuple[int, bytes]) -> RestEndpoint:
        endpoints.append(RestEndpoint(list(answers)))
        return endpoints[-1]

    yield make
    for endpoint in endpoints:
        endpoint.stop()


def test_create_conversation_posts_with_cookies_and_no_bearer(make_rest: Callable[..., RestEndpoint]) -> None:
    rest = make_rest((200, json.dumps({"id": CONV}).encode()))
    handle = client(rest.base_url, clock=lambda: 1234.0).create_conversation(account="env-3")
    assert handle == CopilotHandle(CONV, account="env-3", turns=0, created=1234.0)
    path, headers, body = rest.requests[0]
    assert (path, body) == ("/c/api/conversations", b"")
    assert headers["origin"] == "https://copilot.microsoft.com"
    assert headers["referer"] == "https://copilot.microsoft.com/"
    assert headers["x-search-uilang"] == "en-us" and "Mozilla" in headers["user-agent"]
    assert headers["cookie"] == COOKIES
    assert "authorization" not in headers  # REST is cookie-only by default (B1.1 [U])


def test_create_conversation_rejection(make_rest: Callable[..., RestEndpoint]) -> None:
    rest = make_rest((401, b'{"error":"unauthorized"}'))
    with pytest.raises(Unauthorized, match="UPSTREAM_COOKIES"):
        client(rest.base_url).create_conversation()


def test_boundary_builds_copilot_clients_and_loads_copilot_handles() -> None:
    settings = Settings(upstream="copilot", upstream_cookies=("a=1", "b=2"))
    assert isinstance(build_client(settings, Credentials("env-2", cookies="b=2")), CopilotClient)
    stored = CopilotHandle(CONV, account="env-2", turns=1).to_json()
    assert load_handle(settings, stored) == CopilotHandle(CONV, account="env-2", turns=1)
    legacy = {**stored, "account": 1}  # stored before the pool: the cookie index
    assert load_handle(settings, legacy) == CopilotHandle(CONV, account="env-2", turns=1)
    assert load_handle(settings, {"dialect": "copilot"}) is None  # damaged: start afresh
    assert load_handle(Settings(upstream="bing"), stored) is None
    assert type(load_handle(settings, stored)) is CopilotHandle


# --- image input ------------------------------------------------------------------------------------


def test_images_are_uploaded_once_per_conversation_and_sent_before_the_text(sim: Any) -> None:
    import hashlib

    import requests

    from tests.simulator import copilot_media
    from workers.upstream.context import TurnImage

    png = copilot_media.png(9, 9, 9)
    image = TurnImage(digest=hashlib.sha256(png).hexdigest(), mime="image/png", data=png)
    copilot_client = CopilotClient(
        base_url=sim.copilot_url, cookies="_U=user-one", connected_wait=1.0, done_drain=0.3
    )
    handle = copilot_client.create_conversation(account="env-1")
    for _turn in (1, 2):
        events = list(copilot_client.stream_turn(handle, TurnInput("what is it?", images=(image,))))
        done = events[-1]
        assert isinstance(done, Done) and f"I see an image ({len(png)} bytes)" in done.text
        send = sim.last_send()
        assert send is not None
        assert [part["type"] for part in send["content"]] == ["image", "text"]
        assert send["content"][0]["url"] == handle.images[image.digest]
    (record,) = requests.get(f"{sim.http_url}/_sim/attachments", timeout=5).json()
    assert record["used"] == 2  # one upload, used by both turns
    assert CopilotHandle.from_json(handle.to_json()).images == handle.images


def test_a_refused_upload_is_an_account_error(sim: Any) -> None:
    from workers.upstream.context import TurnImage

    copilot_client = CopilotClient(base_url=sim.copilot_url, cookies="_U=revoked", connected_wait=1.0)
    image = TurnImage(digest="0" * 64, mime="image/png", data=b"\x89PNG\r\n\x1a\n")
    with pytest.raises(Unauthorized):
        list(copilot_client.stream_turn(CopilotHandle(CONV), TurnInput("x", images=(image,))))
