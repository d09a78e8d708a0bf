"""The simulator's Copilot `/c/api/chat` dialect, over real loopback sockets.

The client here is deliberately tiny and written straight from the reference (Part B of
upstream-protocols.md) with `requests` and `websocket-client`, so these tests check the
simulator against the document, not against the gateway's own Copilot client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import re
import time
import uuid
from typing import Any

import pytest
import requests
import websocket

from tests.simulator import copilot_media
from tests.support.simulator import SimulatorProcess

ORIGIN = "https://copilot.microsoft.com"
NANOID = re.compile(r"[A-Za-z0-9]{21}")
PREAMBLE = (
    {"event": "setOptions", "supportedFeatures": ["partial-generated-images"], "supportedCards": ["image"],
     "ads": {"supportedTypes": []}},
    {"event": "reportLocalConsents", "grantedConsents": []},
)  # fmt: skip
INVALID_EVENT = {"event": "error", "errorCode": "invalid-event", "id": "0.0002"}
ENDS = ("suggestedFollowups", "error", "challenge", "chatMessageError")
"""Events after which a turn has nothing more to say (for these tests' purposes)."""


# -- a raw Copilot client, per the reference -------------------------------------------------


@dataclasses.dataclass
class Reply:
    """Everything the server sent, grouped by websocket message."""

    messages: list[list[dict[str, Any]]]
    ending: str  # "until", "close", "lost" or "timeout"
    close_code: int | None = None
    times: list[float] = dataclasses.field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """All events, flattened."""
        return [event for message in self.messages for event in message]

    @property
    def names(self) -> list[str]:
        """The `event` names in order."""
        return [event["event"] for event in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        """The events called `name`."""
        return [event for event in self.events if event["event"] == name]

    @property
    def text(self) -> str:
        """The answer: every appendText delta, concatenated (B3.2)."""
        return "".join(event["text"] for event in self.of("appendText"))


def start(sim: SimulatorProcess, cookie: str = "") -> tuple[str, str]:
    """`POST /c/api/start`; returns the conversation id and the Cookie header to use from now on."""
    body: dict[str, Any] = {
        "timeZone": "America/Los_Angeles",
        "startNewConversation": True,
        "teenSupportEnabled": True,
    }
    response = requests.post(f"{sim.copilot_url}/c/api/start", json=body, headers=_cookie(cookie), timeout=5)
    assert response.status_code == 200, response.text
    anon = response.cookies.get("__Host-copilot-anon")
    if anon:
        cookie = f"{cookie}; __Host-copilot-anon={anon}".lstrip("; ")
    return response.json()["currentConversationId"], cookie


def create(sim: SimulatorProcess, cookie: str = "_U=user-one") -> str:
    """`POST /c/api/conversations` → the new id."""
    response = requests.post(f"{sim.copilot_url}/c/api/conversations", headers=_cookie(cookie), timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _cookie(cookie: str) -> dict[str, str]:
    return {"Cookie": cookie} if cookie else {}


def chat_url(sim: SimulatorProcess, *, session: bool = True, **params: str) -> str:
    """The websocket URL with `api-version=2`, a fresh clientSessionId and `params`."""
    query = {"api-version": "2", **({"clientSessionId": str(uuid.uuid4())} if session else {}), **params}
    return sim.copilot_chat_url + "?" + "&".join(f"{key}={value}" for key, value in query.items())


def connect(
    sim: SimulatorProcess, cookie: str = "_U=user-one", *, wait: bool = True, **params: Any
) -> websocket.WebSocket:
    """Open `/c/api/chat`; by default wait for `connected` (2026 servers speak first)."""
    url = chat_url(sim, **params)
    ws = websocket.create_connection(url, timeout=5, origin=ORIGIN, cookie=cookie or None)
    if wait:
        assert json.loads(ws.recv()) == {"event": "connected"}
    return ws


def send_event(conversation_id: str, text: str, mode: str = "chat", **extra: Any) -> dict[str, Any]:
    """A `send` shaped like B7.1."""
    event = {
        "event": "send",
        "conversationId": conversation_id,
        "content": [{"type": "text", "text": text}],
        "mode": mode,
        "context": {},
    }
    event.update(extra)
    return event


def emit(ws: websocket.WebSocket, *events: dict[str, Any]) -> None:
    """Send each event as its own websocket message."""
    for event in events:
        ws.send(json.dumps(event))


def parse(message: str) -> list[dict[str, Any]]:
    """Every JSON object in one message (several may be concatenated, B7.3)."""
    decoder, events, position = json.JSONDecoder(), [], 0
    while position < len(message):
        event, position = decoder.raw_decode(message, position)
        events.append(event)
    return events


def read(
    ws: websocket.WebSocket,
    *,
    until: tuple[str, ...] = ENDS,
    timeout: float = 5.0,
) -> Reply:
    """Read until an event named in `until` (or close, loss of the socket, or silence)."""
    reply = Reply(messages=[], ending="timeout")
    ws.settimeout(timeout)
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return reply
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            reply.ending = "lost"
            return reply
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            reply.ending = "close"
            reply.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            # websocket-client already answered the close; a second one from ws.close() would
            # leave the server waiting out its close timeout, so just drop the socket.
            ws.shutdown()
            return reply
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        events = parse(data.decode())
        reply.messages.append(events)
        reply.times.append(time.monotonic())
        if any(event["event"] in until for event in events):
            reply.ending = "until"
            return reply


def turn(
    sim: SimulatorProcess,
    conversation_id: str,
    text: str,
    cookie: str = "_U=user-one",
    *,
    until: tuple[str, ...] = ENDS,
    **extra: Any,
) -> Reply:
    """One socket, preamble, one send, read to the end, close (the usual 2026 client)."""
    ws = connect(sim, cookie)
    try:
        emit(ws, *PREAMBLE, send_event(conversation_id, text, **extra))
        return read(ws, until=until)
    finally:
        ws.close()


def violations(sim: SimulatorProcess) -> list[str]:
    """The simulator's recorded client violations."""
    return list(sim.stats()["violations"])


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits a digest starts with."""
    return 256 - int.from_bytes(digest, "big").bit_length()


def solve_hashcash(parameter: str, variant: str, *, want: bool = True) -> str:
    """Brute-force a nonce the given verifier accepts (or, with want=False, one it rejects)."""
    seed, _, raw = parameter.rpartition(":")
    difficulty = int(raw)
    for n in itertools.count():
        if variant == "bits":
            ok = leading_zero_bits(hashlib.sha256((seed + str(n)).encode()).digest()) >= difficulty
        else:
            ok = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest().startswith("0" * difficulty)
        if ok is want:
            return str(n)
    raise AssertionError("unreachable")


# -- REST ---------------------------------------------------------------------------------------


def test_landing_page_sets_session_cookies(sim: SimulatorProcess) -> None:
    response = requests.get(sim.copilot_url + "/", timeout=5)

    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert {"__cf_bm", "MUID", "_EDGE_S"} <= set(response.cookies.keys())


def test_start_issues_an_anonymous_identity_once(sim: SimulatorProcess) -> None:
    session = requests.Session()
    session.get(sim.copilot_url + "/", timeout=5)
    body: dict[str, Any] = {"timeZone": "UTC", "startNewConversation": True}

    first = session.post(f"{sim.copilot_url}/c/api/start", json=body, timeout=5)
    second = session.post(f"{sim.copilot_url}/c/api/start", json=body, timeout=5)
    current = session.post(
        f"{sim.copilot_url}/c/api/start", json={**body, "startNewConversation": False}, timeout=5
    )

    assert first.json() == {
        "currentConversationId": first.json()["currentConversationId"],
        "remainingTurns": first.json()["remainingTurns"],
        "isBlocked": False,
        "banExpiresAt": None,
    }
    assert NANOID.fullmatch(first.json()["currentConversationId"])
    assert "__Host-copilot-anon" in first.cookies and "__Host-copilot-anon" not in second.cookies
    assert current.json()["currentConversationId"] == second.json()["currentConversationId"]
    listed = session.get(f"{sim.copilot_url}/c/api/conversations", timeout=5).json()["results"]
    assert [c["id"] for c in listed] == [
        second.json()["currentConversationId"],
        first.json()["currentConversationId"],
    ]
    assert session.get(f"{sim.copilot_url}/c/api/user", timeout=5).json() == {"firstName": None}
    assert sim.stats()["copilot"]["creates"] == 2 and violations(sim) == []


def test_user_is_signed_in_with_a_u_cookie(sim: SimulatorProcess) -> None:
    signed = requests.get(f"{sim.copilot_url}/c/api/user", headers={"Cookie": "_U=abc; MUID=1"}, timeout=5)

    assert signed.json() == {"firstName": "Test"}


def test_start_without_a_json_body_is_a_violation(sim: SimulatorProcess) -> None:
    response = requests.post(f"{sim.copilot_url}/c/api/start", data="nope", timeout=5)

    assert response.status_code == 200
    assert any("/c/api/start" in v for v in violations(sim))


def test_history_list_and_delete_are_per_identity(sim: SimulatorProcess) -> None:
    mine = create(sim, "_U=user-one")
    theirs = create(sim, "_U=user-two")
    turn(sim, mine, "Hello there")
    base = f"{sim.copilot_url}/c/api/conversations"
    one, two = {"Cookie": "_U=user-one"}, {"Cookie": "_U=user-two"}

    history = requests.get(f"{base}/{mine}/history", headers=one, timeout=5).json()
    assert history == {
        "results": [
            {"author": "human", "content": [{"type": "text", "text": "Hello there"}]},
            {
                "author": "ai",
                "content": [{"type": "text", "text": "Hello! You said: Hello there. This is turn 1."}],
            },
        ]
    }
    assert [c["id"] for c in requests.get(base, headers=one, timeout=5).json()["results"]] == [mine]
    assert requests.get(f"{base}/{mine}/history", headers=two, timeout=5).status_code == 404
    assert requests.delete(f"{base}/{mine}", headers=two, timeout=5).status_code == 404
    assert requests.delete(f"{base}/{theirs}", headers=two, timeout=5).status_code == 200
    assert requests.get(f"{base}/{theirs}/history", headers=two, timeout=5).status_code == 404
    assert sim.conversation(theirs)["deleted"] is True


@pytest.mark.parametrize("headers", [{"Cookie": "_U=revoked"}, {"Authorization": "Bearer revoked"}])
def test_revoked_credentials_get_401_on_rest(sim: SimulatorProcess, headers: dict[str, str]) -> None:
    for method, path in [("POST", "start"), ("POST", "conversations"), ("GET", "user")]:
        response = requests.request(method, f"{sim.copilot_url}/c/api/{path}", headers=headers, timeout=5)
        assert response.status_code == 401, path
    assert sim.conversations(dialect="copilot") == []


# -- the upgrade ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {"Origin": ORIGIN}, 400),
        ("?api-version=1", {"Origin": ORIGIN}, 400),
        ("?api-version=2", {}, 403),
        ("?api-version=2&accessToken=revoked", {"Origin": ORIGIN}, 401),
        ("?api-version=2", {"Origin": ORIGIN, "Cookie": "_U=revoked"}, 401),
    ],
)
def test_bad_upgrades_are_refused(
    sim: SimulatorProcess, query: str, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            sim.copilot_chat_url + query, timeout=5, header=[f"{k}: {v}" for k, v in headers.items()],
            suppress_origin=True,
        )  # fmt: skip

    assert refused.value.status_code == status
    assert sim.stats()["copilot"]["sockets"] == 0


# -- a normal answer --------------------------------------------------------------------------------


def test_normal_turn_follows_b7_1(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "Say hi")

    assert reply.names == [
        "received", "startMessage", *["appendText"] * 9, "partCompleted", "done", "titleUpdate",
        "suggestedFollowups",
    ]  # fmt: skip
    assert [event["id"] for event in reply.events] == [str(i) for i in range(len(reply.events))]
    received, started = reply.events[:2]
    assert received["conversationId"] == started["conversationId"] == conversation_id
    assert NANOID.fullmatch(received["messageId"]) and NANOID.fullmatch(started["messageId"])
    assert received["messageId"] != started["messageId"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", started["createdAt"])
    bot_id = started["messageId"]
    assert all(e["messageId"] == bot_id for e in reply.events[2:] if "messageId" in e)
    assert all(e["partId"] == "0" for e in reply.of("appendText") + reply.of("partCompleted"))
    assert [e["text"] for e in reply.of("appendText")][:3] == ["Hello!", " You", " said:"]
    assert reply.text == "Hello! You said: Say hi. This is turn 1."
    assert reply.of("titleUpdate")[0]["title"] and len(reply.of("suggestedFollowups")[0]["suggestions"]) == 2
    record = sim.conversation(conversation_id)
    assert record["dialect"] == "copilot" and record["signedIn"] is True
    assert record["turns"][0]["bot"] == reply.text and record["turns"][0]["mode"] == "chat"
    assert record["turns"][0]["setOptions"] == PREAMBLE[0]
    assert record["turns"][0]["reportLocalConsents"] == PREAMBLE[1]
    assert re.fullmatch(r"[0-9a-f-]{36}", record["turns"][0]["clientSessionId"])
    assert sim.last_send() == send_event(conversation_id, "Say hi")
    assert sim.last_invocation() is None
    assert violations(sim) == []


def test_follow_up_turn_reuses_the_id_on_a_new_socket(sim: SimulatorProcess) -> None:
    sim.configure(words_per_update=3, max_turns=1, expiry_seconds=1, clock_offset=3600)
    conversation_id = create(sim)
    turn(sim, conversation_id, "one")

    reply = turn(sim, conversation_id, "two", mode="smart")

    assert [e["text"] for e in reply.of("appendText")] == ["Hello! You said:", " two. This is", " turn 2."]
    assert "titleUpdate" not in reply.names  # only the first turn names the conversation
    assert [t["mode"] for t in sim.conversation(conversation_id)["turns"]] == ["chat", "smart"]


def test_an_idle_socket_is_closed_after_copilot_idle_close(sim: SimulatorProcess) -> None:
    sim.configure(copilot_idle_close=0.3, linger=0.05)  # linger is not what closes a finished turn's socket
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, send_event(conversation_id, "hi"))
    assert read(ws).ending == "until"

    before = time.monotonic()
    assert read(ws, timeout=3).ending == "close"
    assert time.monotonic() - before >= 0.2


def test_by_default_a_socket_stays_open_after_its_turn(sim: SimulatorProcess) -> None:
    sim.configure(linger=0.05)
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, *PREAMBLE, send_event(conversation_id, "hi"))
    assert read(ws).ending == "until"

    assert read(ws, timeout=0.5).ending == "timeout"  # no idle close unless configured
    ws.close()


def test_one_socket_carries_several_turns_one_after_another(sim: SimulatorProcess) -> None:
    first, second = create(sim), create(sim)
    ws = connect(sim)
    emit(ws, *PREAMBLE, send_event(first, "one"))
    replies = [read(ws)]
    for conversation_id, text in ((second, "other"), (first, "two"), (first, "two")):
        emit(ws, send_event(conversation_id, text))  # no second preamble: once per socket
        replies.append(read(ws))
    ws.close()

    assert [reply.text for reply in replies] == [
        "Hello! You said: one. This is turn 1.",
        "Hello! You said: other. This is turn 1.",
        "Hello! You said: two. This is turn 2.",
        "Hello! You said: two. This is turn 3.",  # the same words after `done` are a new turn
    ]
    assert all("done" in reply.names for reply in replies)
    assert [t["user"] for t in sim.conversation(first)["turns"]] == ["one", "two", "two"]
    stats = sim.stats()
    assert (stats["copilot"]["sockets"], stats["copilot"]["invocations"]) == (1, 4)
    assert violations(sim) == []


# -- ordering and strictness ------------------------------------------------------------------------


def test_strict_frames_before_connected_are_invalid(sim: SimulatorProcess) -> None:
    sim.configure(copilot_connected_delay=0.3)
    conversation_id = create(sim)
    ws = connect(sim, wait=False)
    emit(ws, send_event(conversation_id, "too early"))

    reply = read(ws, until=("connected",))
    ws.close()

    assert reply.events == [INVALID_EVENT, {"event": "connected"}]
    assert any("before the server's connected" in v for v in violations(sim))
    assert sim.conversation(conversation_id)["turns"] == []


def test_strict_send_needs_a_client_session_id(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim, session=False)
    emit(ws, send_event(conversation_id, "hi"))

    reply = read(ws)
    ws.close()

    assert reply.events == [INVALID_EVENT]
    assert any("clientSessionId" in v for v in violations(sim))


def test_strict_duplicate_send_is_invalid_and_cancels_the_turn(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    emit(
        ws, send_event(conversation_id, "[sim:slow=0.2] hi"), send_event(conversation_id, "[sim:slow=0.2] hi")
    )

    reply = read(ws, until=("error",))
    later = read(ws, timeout=0.5)
    ws.close()

    assert reply.events[-1] == INVALID_EVENT and "done" not in reply.names + later.names
    assert any("duplicate send" in v for v in violations(sim))
    assert sim.conversation(conversation_id)["turns"] == []


def test_connected_twice_trips_a_client_that_replays_its_preamble(sim: SimulatorProcess) -> None:
    sim.configure(copilot_connected_twice=True)
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, *PREAMBLE, send_event(conversation_id, "[sim:slow=0.2] hi"))
    assert json.loads(ws.recv()) == {"event": "connected"}
    emit(ws, *PREAMBLE, send_event(conversation_id, "[sim:slow=0.2] hi"))  # the bug: replay on connected

    reply = read(ws, until=("error",))
    ws.close()

    assert INVALID_EVENT in reply.events
    assert any("duplicate send" in v for v in violations(sim))


def test_connected_twice_is_harmless_to_a_client_that_sends_once(sim: SimulatorProcess) -> None:
    sim.configure(copilot_connected_twice=True)
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, *PREAMBLE, send_event(conversation_id, "hi"))

    reply = read(ws)
    ws.close()

    assert reply.names[0] == "connected" and reply.names[-1] == "suggestedFollowups"
    assert reply.text.endswith("This is turn 1.") and violations(sim) == []


def test_lenient_mode_sends_no_connected_and_checks_no_order(sim: SimulatorProcess) -> None:
    sim.configure(copilot_strict=False)
    conversation_id = create(sim)
    ws = connect(sim, wait=False, session=False)
    emit(ws, send_event(conversation_id, "hi"))

    reply = read(ws)
    ws.close()

    assert reply.names[0] == "received" and reply.names[-1] == "suggestedFollowups"
    assert violations(sim) == []


def test_a_new_send_after_done_on_the_same_socket_is_a_new_turn(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, send_event(conversation_id, "one"))
    first = read(ws)
    emit(ws, send_event(conversation_id, "two"))
    second = read(ws)
    ws.close()

    assert first.text.endswith("turn 1.") and second.text.endswith("turn 2.")
    assert int(second.events[0]["id"]) == len(first.events)  # the id sequence is per socket
    assert violations(sim) == []


# -- malformed client frames --------------------------------------------------------------------------


def test_non_json_frame_is_invalid_and_a_violation(sim: SimulatorProcess) -> None:
    ws = connect(sim)
    ws.send("hello?")

    reply = read(ws)
    ws.close()

    assert reply.events == [INVALID_EVENT]
    assert any("non-JSON" in v for v in violations(sim))


def test_signalr_framing_and_forbidden_fields_are_violations_but_answered(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    ws.send(json.dumps(send_event(conversation_id, "hi", tone="Balanced", messageId="x")) + "\x1e")

    reply = read(ws)
    ws.close()

    assert reply.names[-1] == "suggestedFollowups"
    found = violations(sim)
    assert any("0x1E" in v for v in found) and any("'tone'" in v for v in found)
    assert any("'messageId'" in v for v in found)


def test_unknown_events_and_incomplete_sends_are_violations(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, {"event": "hello"})
    unknown = read(ws)
    emit(ws, {"event": "send", "conversationId": conversation_id, "content": [{"type": "text", "text": "x"}]})
    incomplete = read(ws)
    ws.close()

    assert unknown.events == [INVALID_EVENT] and incomplete.events == [INVALID_EVENT]
    found = violations(sim)
    assert any("unknown client event 'hello'" in v for v in found)
    assert any("without a mode" in v for v in found)


# -- rejections -------------------------------------------------------------------------------------


def test_unknown_foreign_and_deleted_conversations_are_rejected(sim: SimulatorProcess) -> None:
    theirs = create(sim, "_U=user-two")
    deleted = create(sim)
    requests.delete(
        f"{sim.copilot_url}/c/api/conversations/{deleted}", headers={"Cookie": "_U=user-one"}, timeout=5
    )

    for conversation_id in ("dRUXwuM545tff65JPZ3rn", theirs, deleted):
        reply = turn(sim, conversation_id, "hi")
        assert reply.events == [{"event": "error", "errorCode": "invalid-event"}], conversation_id
    sim.configure(copilot_unknown_conversation_code="conversation-not-found")
    assert turn(sim, theirs, "hi").events == [{"event": "error", "errorCode": "conversation-not-found"}]
    assert sim.conversation(theirs)["turns"] == []


def test_anonymous_identity_follows_the_anon_cookie(sim: SimulatorProcess) -> None:
    conversation_id, cookie = start(sim)
    other_id, other_cookie = start(sim)

    assert turn(sim, conversation_id, "hi", cookie=cookie).names[-1] == "suggestedFollowups"
    assert turn(sim, conversation_id, "hi", cookie=other_cookie).of("error")
    assert sim.conversation(conversation_id)["identity"].startswith("anon:")
    assert sim.conversation(conversation_id)["identity"] != sim.conversation(other_id)["identity"]


def test_unsupported_mode(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    assert turn(sim, conversation_id, "hi", mode="study").events == [
        {"event": "error", "errorCode": "unsupported-mode"}
    ]
    sim.configure(copilot_modes="chat")
    assert turn(sim, conversation_id, "hi", mode="smart").of("error")[0]["errorCode"] == "unsupported-mode"
    assert turn(sim, conversation_id, "hi", mode="chat").text.endswith("turn 1.")
    assert violations(sim) == []


# -- faults -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ("unavailable", {"event": "error", "errorCode": "chat-service-unavailable"}),
        ("invalid_event", {"event": "error", "errorCode": "invalid-event", "id": "0.0002"}),
        (
            "unauthorized",
            {"event": "error", "errorCode": "unauthorized", "message": "Invalid or expired access token"},
        ),
        ("internal", {"event": "error", "errorCode": "internal-error", "message": "Something went wrong"}),
    ],
)
def test_error_faults(sim: SimulatorProcess, prefix: str, error: dict[str, Any]) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, f"[sim:{prefix}] hello")

    assert reply.events == [error]
    assert sim.conversation(conversation_id)["turns"] == [] and violations(sim) == []


def test_throttled_is_one_message_with_a_null_challenge(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:throttled] hi")

    assert len(reply.messages) == 1
    throttle, challenge = reply.messages[0]
    assert throttle["event"] == "chatMessageError" and throttle["errorCode"] == "throttled"
    assert throttle["errorDetail"]["type"] == "throttled"
    available = throttle["errorDetail"]["nextAvailableAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", available)
    ahead = dt.datetime.fromisoformat(available).timestamp() - time.time()
    assert 115 <= ahead <= 125
    assert challenge == {"event": "challenge", "method": None, "parameter": None, "id": "0.0002"}
    assert sim.conversation(conversation_id)["turns"] == []


@pytest.mark.parametrize(("prefix", "method"), [("captcha", None), ("cloudflare", "cloudflare")])
def test_browser_challenges_must_not_be_answered(
    sim: SimulatorProcess, prefix: str, method: str | None
) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, send_event(conversation_id, f"[sim:{prefix}] hi"))
    challenge = read(ws).events[-1]
    emit(ws, {"event": "challengeResponse", "token": "", "method": method, "id": challenge["id"]})

    reply = read(ws)
    ws.close()

    assert challenge["event"] == "challenge" and challenge["method"] == method and challenge["id"] == "0.0001"
    assert (challenge["parameter"] is None) is (method is None)
    assert reply.events == [INVALID_EVENT]
    assert any("challenge" in v and "browser" in v for v in violations(sim))
    assert sim.challenges()[0]["answered"] is True and sim.challenges()[0]["solved"] is False


def challenged_turn(
    sim: SimulatorProcess, text: str, answer: Any, *, resend: bool = True, echo_id: bool = True
) -> tuple[dict[str, Any], Reply, str]:
    """Send `text`, answer its challenge with `answer(challenge)`, re-send, read the outcome."""
    conversation_id = create(sim)
    ws = connect(sim)
    sent = send_event(conversation_id, text)
    emit(ws, *PREAMBLE, sent)
    challenge = read(ws).events[-1]
    assert challenge["event"] == "challenge"
    response = {"event": "challengeResponse", "token": answer(challenge), "method": challenge["method"]}
    if echo_id:
        response["id"] = challenge["id"]
    emit(ws, response, *([sent] if resend else []))
    reply = read(ws)
    ws.close()
    return challenge, reply, conversation_id


@pytest.mark.parametrize(("variant", "difficulty"), [("bits", 8), ("hex", 2)])
def test_hashcash_answered_then_resent_is_answered(
    sim: SimulatorProcess, variant: str, difficulty: int
) -> None:
    sim.configure(hashcash_variant=variant, hashcash_difficulty=difficulty)

    challenge, reply, conversation_id = challenged_turn(
        sim, "[sim:hashcash] PROBE", lambda c: solve_hashcash(c["parameter"], variant)
    )

    assert challenge["method"] == "hashcash" and challenge["id"] == "0.0001"
    assert re.fullmatch(rf"[0-9a-f]{{64}}:{difficulty}", challenge["parameter"])
    assert reply.names[0] == "received" and reply.text == "Hello! You said: PROBE. This is turn 1."
    recorded = sim.conversation(conversation_id)["turns"][0]["challenge"]
    assert recorded["method"] == "hashcash" and recorded["solved"] is True and recorded["variant"] == variant
    assert violations(sim) == []


@pytest.mark.parametrize("variant", ["bits", "hex"])
def test_hashcash_wrong_answer_is_invalid(sim: SimulatorProcess, variant: str) -> None:
    sim.configure(hashcash_variant=variant, hashcash_difficulty=2)

    _, reply, conversation_id = challenged_turn(
        sim, "[sim:hashcash] hi", lambda c: solve_hashcash(c["parameter"], variant, want=False), resend=False
    )

    assert reply.events == [{"event": "error", "errorCode": "invalid-event"}]
    assert sim.conversation(conversation_id)["turns"] == []
    assert sim.challenges()[0]["solved"] is False and violations(sim) == []


def test_hashcash_answer_must_echo_the_challenge_id(sim: SimulatorProcess) -> None:
    _, reply, _ = challenged_turn(
        sim,
        "[sim:hashcash] hi",
        lambda c: solve_hashcash(c["parameter"], "bits"),
        resend=False,
        echo_id=False,
    )

    assert reply.events == [INVALID_EVENT]
    assert any("does not echo" in v for v in violations(sim))


def test_arithmetic_challenge(sim: SimulatorProcess) -> None:
    def answer(challenge: dict[str, Any]) -> str:
        a = int(challenge["parameter"])
        return str(round(((a**3 / 100) + 25 * a) % 22))

    challenge, reply, conversation_id = challenged_turn(sim, "[sim:arithmetic] sum", answer)

    assert challenge["method"] == "copilot" and challenge["parameter"].isdigit()
    assert reply.text == "Hello! You said: sum. This is turn 1."
    assert sim.conversation(conversation_id)["turns"][0]["challenge"]["token"] == answer(challenge)


def test_disconnect_closes_after_a_few_deltas(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:disconnect] tell me a story")

    assert reply.ending == "close" and reply.close_code == 1000
    assert reply.names == ["received", "startMessage", "appendText", "appendText", "appendText"]
    assert sim.conversation(conversation_id)["turns"] == []


def test_drop_aborts_the_connection(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:drop] tell me a story")

    assert reply.ending == "lost" and len(reply.of("appendText")) == 3
    assert sim.conversation(conversation_id)["turns"] == []


def test_slow_and_long_chain(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:slow=0.1][sim:long=4] ignored")

    assert [e["text"] for e in reply.of("appendText")] == ["w1", " w2", " w3", " w4"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(reply.times[2:6])]
    assert min(gaps) >= 0.08


def test_hang_and_hang_after(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    ws = connect(sim)
    emit(ws, send_event(conversation_id, "[sim:hang] hi"))
    assert read(ws, timeout=0.3).messages == []
    assert sim.stats()["copilot"]["open_sockets"] == 1
    ws.close()
    ws = connect(sim)
    emit(ws, send_event(conversation_id, "[sim:hang_after=2] hi"))

    reply = read(ws, timeout=0.4)
    ws.close()

    assert reply.ending == "timeout" and reply.text == "Hello! You"


def test_stamp_deltas_carry_send_times(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    before = time.time()

    reply = turn(sim, conversation_id, "[sim:stamp=3] go")

    stamps = [float(e["text"]) for e in reply.of("appendText")]
    assert len(stamps) == 3 and before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time()
    assert re.fullmatch(r"( \d+\.\d{6}){3}", reply.text)


def test_search_interleaves_citations(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:search] Cake recipe")

    citations = reply.of("citation")
    assert [c["url"] for c in citations] == ["https://example.com/sim/one", "https://example.org/sim/two"]
    assert len({c["title"] for c in citations}) == 2 and len({c["iconUrl"] for c in citations}) == 2
    assert reply.text == "Here is what I found about Cake recipe and a second source agrees."
    first = reply.names.index("citation")
    assert reply.names[first - 1] == "appendText" and reply.names[first + 1] == "appendText"
    assert reply.events[first - 1]["text"] == " recipe"
    assert sim.conversation(conversation_id)["turns"][0]["bot"] == reply.text


@pytest.mark.parametrize("prefix", ["image", "image_close"])
def test_image_turn(sim: SimulatorProcess, prefix: str) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, f"[sim:{prefix}] a red apple", until=("done",))

    ending = ["done"] if prefix == "image" else []
    assert reply.names == [
        "received", "startMessage", "appendText", "generatingImage", "partialImageGenerated",
        "partialImageGenerated", "imageGenerated", *ending,
    ]  # fmt: skip
    assert reply.ending == ("until" if prefix == "image" else "close")
    assert reply.text == "Sure, here it is."
    generating, final = reply.of("generatingImage")[0], reply.of("imageGenerated")[0]
    assert generating["prompt"] == "a red apple" and generating["progressionText"]
    assert NANOID.fullmatch(generating["partId"]) and final["partId"] == generating["partId"]
    assert re.fullmatch(r"https://copilot\.microsoft\.com/th/id/BCO\.[0-9a-f-]{36}\.png", final["url"])
    assert final["thumbnailUrl"] == final["url"] + "/?w=270&qlt=90" and final["nextAvailableAt"] is None
    assert all(p["content"].startswith("iVBORw0KGgo") for p in reply.of("partialImageGenerated"))
    assert sim.conversation(conversation_id)["turns"][0]["image"]["url"] == final["url"]


def test_reasoning_thinks_before_answering(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "[sim:reasoning] why?", mode="reasoning")

    assert reply.names[2:4] == ["chainOfThought", "chainOfThought"]
    assert all(e["text"] for e in reply.of("chainOfThought"))
    assert reply.text == "Hello! You said: why?. This is turn 1."


def test_unknown_and_chathub_only_prefixes_are_violations(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    turn(sim, conversation_id, "[sim:apology] hi")

    assert any("[sim:apology]" in v for v in violations(sim))


# -- memory ---------------------------------------------------------------------------------------------


def test_recall_lists_earlier_turns(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    assert turn(sim, conversation_id, "[sim:recall]").text == "Earlier you said: nothing"
    turn(sim, conversation_id, "My name is Ada")

    reply = turn(sim, conversation_id, "[sim:recall] what did I say?")

    assert reply.text == "Earlier you said: [sim:recall] | My name is Ada"


def test_recall_reads_page_context_and_remembers_it(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    page = (
        "[system](#additional_instructions)\nBe brief.\n\n"
        "[user](#message)\nI like tea\n\n[assistant](#message)\nNoted.\n\n[user](#message)\nand cake"
    )
    context = {"edge": {"pageTitle": "Chat", "pageContent": page, "pageUrl": "https://example.com/"}}
    ws = connect(sim, features="-,ncedge,edgepagecontext")
    emit(ws, send_event(conversation_id, "[sim:recall]", context=context))
    seeded = read(ws)
    ws.close()

    later = turn(sim, conversation_id, "[sim:recall]")

    assert seeded.text == "Earlier you said: I like tea | and cake (system: Be brief.)"
    assert later.text == "Earlier you said: I like tea | and cake | [sim:recall] (system: Be brief.)"
    record = sim.conversation(conversation_id)
    assert record["context"] == [page] and record["turns"][0]["context"] == context
    assert record["turns"][0]["features"] == "-,ncedge,edgepagecontext"
    assert violations(sim) == []


def test_page_context_without_the_edge_feature_flag_is_a_violation(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    context = {"edge": {"pageContent": "[user](#message)\nhi"}}

    turn(sim, conversation_id, "hi", context=context)

    assert any("edgepagecontext" in v for v in violations(sim))


# -- control API -------------------------------------------------------------------------------------


def test_control_api_covers_both_dialects(sim: SimulatorProcess) -> None:
    chathub = requests.get(sim.create_url, headers={"Cookie": "_U=x"}, timeout=5).json()["conversationId"]
    copilot_id = create(sim)
    turn(sim, copilot_id, "hi")

    assert sim.conversations() == [chathub, copilot_id]
    assert sim.conversations(dialect="copilot") == [copilot_id]
    assert sim.conversations(dialect="chathub") == [chathub]
    assert sim.conversation(chathub)["dialect"] == "chathub"
    stats = sim.stats()
    assert (stats["creates"], stats["sockets"], stats["invocations"]) == (2, 1, 1)
    copilot_share = dict(stats["copilot"])
    assert 0 < copilot_share.pop("turn_seconds") < 5  # the one turn's time
    assert copilot_share == {
        "creates": 1, "sockets": 1, "open_sockets": 0, "idle_sockets": 0, "busy_sockets": 0, "invocations": 1
    }
    assert stats["chathub"]["creates"] == 1 and stats["chathub"]["invocations"] == 0

    config = sim.configure(copilot_strict="false", copilot_connected_twice=True, hashcash_variant="hex")
    assert (config["copilot_strict"], config["copilot_connected_twice"], config["hashcash_variant"]) == (
        False, True, "hex",
    )  # fmt: skip
    for bad in ({"hashcash_variant": "md5"}, {"copilot_strict": "maybe"}, {"hashcash_difficulty": 300}):
        assert requests.post(f"{sim.http_url}/_sim/config", json=bad, timeout=5).status_code == 400

    sim.reset()

    assert sim.conversations() == [] and sim.last_send() is None and sim.challenges() == []
    assert sim.configure()["copilot_strict"] is True


def test_text_over_the_limit_is_text_too_long(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    at_limit = turn(sim, conversation_id, "x" * 10240)
    over = turn(sim, conversation_id, "x" * 10241)
    sim.configure(copilot_max_text=0)
    unlimited = turn(sim, conversation_id, "x" * 20000)

    assert at_limit.of("done") and unlimited.of("done")
    assert over.events == [{"event": "error", "errorCode": "text-too-long"}]
    assert len(sim.conversation(conversation_id)["turns"]) == 2


# -- attachments (image input) and generated images ------------------------------------------


def _attach(sim: SimulatorProcess, body: bytes, cookie: str = "_U=user-one", kind: str = "image/png") -> Any:
    return requests.post(
        f"{sim.copilot_url}/c/api/attachments",
        data=body,
        headers={"Content-Type": kind, **_cookie(cookie)},
        timeout=5,
    )


def test_attachments_are_recorded_and_seen_by_the_model(sim: SimulatorProcess) -> None:
    png = copilot_media.png(1, 2, 3)
    response = _attach(sim, png)
    assert response.status_code == 200
    url = response.json()["url"]
    conversation = create(sim)
    content = [{"type": "image", "url": url}, {"type": "text", "text": "what is it?"}]
    reply = turn(sim, conversation, "unused", content=content)
    assert reply.text.startswith(f"I see an image ({len(png)} bytes). ")
    (record,) = requests.get(f"{sim.http_url}/_sim/attachments", timeout=5).json()
    assert record["sha256"] == hashlib.sha256(png).hexdigest() and record["used"] == 1
    assert violations(sim) == []


def test_attachments_need_the_account_and_an_image(sim: SimulatorProcess) -> None:
    assert _attach(sim, b"\x89PNG", cookie="").status_code == 401  # anonymous without a session
    assert _attach(sim, b"\x89PNG", cookie="_U=revoked").status_code == 401
    assert _attach(sim, b"hello", kind="text/plain").status_code == 400
    assert any("/c/api/attachments" in v for v in violations(sim))
    reply = turn(
        sim,
        create(sim),
        "x",
        content=[{"type": "image", "url": "https://nowhere/x"}, {"type": "text", "text": "x"}],
    )
    assert "I see no image" in reply.text
    assert any("never uploaded" in v for v in violations(sim))


def test_asking_in_words_draws_and_the_image_is_served(sim: SimulatorProcess) -> None:
    reply = turn(sim, create(sim), "Create an image: a red apple", until=("done",))  # an image turn's end
    (final,) = reply.of("imageGenerated")
    assert reply.of("generatingImage")[0]["prompt"] == "a red apple"
    path = final["url"].removeprefix("https://copilot.microsoft.com")
    served = requests.get(f"{sim.http_url}{path}", timeout=5)
    assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
    assert requests.get(f"{sim.http_url}/th/id/other.png", timeout=5).status_code == 404


def test_image_quota_spent(sim: SimulatorProcess) -> None:
    reply = turn(sim, create(sim), "[sim:image_throttled] a cat", until=("done",))
    (final,) = reply.of("imageGenerated")
    assert final["url"] is None and final["nextAvailableAt"]
    assert reply.of("done")


def test_priming_parts_are_answered_briefly_and_turns_take_turn_seconds(sim: SimulatorProcess) -> None:
    sim.configure(turn_seconds=0.5)
    conversation_id = create(sim)
    part = "[Context part 1 of 2. Read it and reply only with OK.]\n\n" + "rule " * 1900
    started = time.monotonic()
    assert turn(sim, conversation_id, part).text == "OK."
    last = "[Context part 2 of 2, the last. Answer it now.]\n\nmore\n\n[My message]\nsay hi"
    assert turn(sim, conversation_id, last).text == "Hello! You said: say hi. This is turn 2."
    took = time.monotonic() - started
    assert 1.0 <= took < 4.0
    assert 1.0 <= sim.stats()["copilot"]["turn_seconds"] < took
