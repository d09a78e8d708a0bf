"""The ChatHub simulator itself, over real loopback sockets.

The client here is deliberately tiny and written straight from the reference (Part A of
upstream-protocols.md) with `requests` and `websocket-client`, so these tests check the
simulator against the document, not against the gateway's own client.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests
import websocket

from tests.support.simulator import SimulatorProcess

RS = "\x1e"
APOLOGY = "Sorry! That's on me, I can't give a response to that right now. What else can I help you with?"
TURN_LIMIT = "Thanks for this conversation! I've reached my limit, will you hit “New topic,” please?"


# -- a raw ChatHub client, per the reference ----------------------------------------------


@dataclasses.dataclass
class Conv:
    """What create returned."""

    id: str
    client_id: str
    signature: str
    encrypted: str
    turns: int = 0


@dataclasses.dataclass
class Reply:
    """Everything the server sent after an invocation, grouped by websocket message."""

    messages: list[list[dict[str, Any]]]
    ending: str  # "type3", "close", "lost" or "timeout"
    close_code: int | None = None
    times: list[float] = dataclasses.field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        """All records, flattened."""
        return [record for message in self.messages for record in message]

    @property
    def answers(self) -> list[dict[str, Any]]:
        """Bot messages of type-1 updates, in order."""
        return [
            r["arguments"][0]["messages"][0]
            for r in self.records
            if r["type"] == 1 and "messages" in r["arguments"][0]
        ]

    @property
    def final(self) -> dict[str, Any]:
        """The type-2 record."""
        return next(r for r in self.records if r["type"] == 2)

    @property
    def result(self) -> dict[str, Any]:
        """The type 2's `item.result`."""
        return self.final["item"]["result"]


def create(sim: SimulatorProcess, cookie: str = "_U=user-cookie; MUID=abc") -> Conv:
    response = requests.get(
        sim.create_url, params={"bundleVersion": "1.1816.0"}, headers={"Cookie": cookie}, timeout=5
    )
    """Create a conversation over HTTP, as A1.1 describes."""
    body = response.json()
    assert body["result"] == {"value": "Success", "message": None}
    return Conv(
        body["conversationId"],
        body["clientId"],
        response.headers["X-Sydney-Conversationsignature"],
        response.headers["X-Sydney-Encryptedconversationsignature"],
    )


def frame(*records: dict[str, Any]) -> str:
    """Records as one websocket message, each ending in 0x1E."""
    return "".join(json.dumps(record) + RS for record in records)


def parse(message: str) -> list[dict[str, Any]]:
    """Split a received message on 0x1E, dropping empty pieces."""
    return [json.loads(piece) for piece in message.split(RS) if piece]


def connect(
    sim: SimulatorProcess, token: str | None, *, handshake: bool = True, quote_token: bool = True
) -> websocket.WebSocket:
    """Open `/sydney/ChatHub`; by default do the SignalR handshake and one ping (A1.3)."""
    url = sim.chathub_url
    if token is not None:
        url += "?sec_access_token=" + (quote(token, safe="") if quote_token else token)
    ws = websocket.create_connection(url, timeout=5, origin="https://www.bing.com")
    if handshake:
        ws.send(frame({"protocol": "json", "version": 1}))
        assert ws.recv() == "{}" + RS
        ws.send(frame({"type": 6}))
    return ws


def invocation(
    conv: Conv, text: str, *, invocation_id: str | None = None, start: bool | None = None, **extra: Any
) -> dict[str, Any]:
    """A type-4 `chat` invocation shaped like A7.1; `extra` overrides argument fields."""
    request_id = str(uuid.uuid4())
    argument = {
        "source": "cib",
        "optionsSets": [
            "nlu_direct_response_filter",
            "deepleo",
            "enablemm",
            "galileo",
            "dv3sugg",
            "autosave",
        ],
        "allowedMessageTypes": [
            "Chat",
            "InternalSearchQuery",
            "InternalSearchResult",
            "InternalLoaderMessage",
            "Disengaged",
        ],
        "sliceIds": [],
        "verbosity": "verbose",
        "scenario": "SERP",
        "traceId": uuid.uuid4().hex,
        "isStartOfSession": conv.turns == 0 if start is None else start,
        "requestId": request_id,
        "message": {
            "author": "user",
            "inputMethod": "Keyboard",
            "text": text,
            "messageType": "Chat",
            "requestId": request_id,
            "messageId": request_id,
            "locale": "en-US",
            "market": "en-US",
            "region": "US",
        },
        "tone": "Balanced",
        "conversationSignature": conv.signature,
        "participant": {"id": conv.client_id},
        "conversationId": conv.id,
    }
    argument.update(extra)
    return {
        "arguments": [argument],
        "invocationId": invocation_id or str(conv.turns),
        "target": "chat",
        "type": 4,
    }


def read(ws: websocket.WebSocket, *, timeout: float = 5.0, until_type3: bool = True) -> Reply:
    """Read until type 3 (or close, loss of the socket, or `timeout` seconds of silence)."""
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
            return reply
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        records = [record for record in parse(data.decode()) if record["type"] != 6]  # ping echoes
        if not records:
            continue
        reply.messages.append(records)
        reply.times.append(time.monotonic())
        if until_type3 and any(record["type"] == 3 for record in records):
            reply.ending = "type3"
            return reply


def turn(sim: SimulatorProcess, conv: Conv, text: str, *, timeout: float = 5.0, **extra: Any) -> Reply:
    """One socket, one invocation, read to the end, close (the usual client pattern)."""
    ws = connect(sim, conv.encrypted)
    try:
        ws.send(frame(invocation(conv, text, **extra)))
        reply = read(ws, timeout=timeout)
    finally:
        ws.close()
    if reply.ending == "type3" and reply.result["value"] == "Success":
        conv.turns += 1
    return reply


def assert_cumulative(reply: Reply) -> None:
    """Each answer update extends the previous one (A3.1: text is cumulative)."""
    texts = [message["text"] for message in reply.answers if "messageType" not in message]
    for before, after in itertools.pairwise(texts):
        assert after.startswith(before), (before, after)


# -- conversation create -------------------------------------------------------------------


def test_create_gives_signed_in_and_anonymous_ids_and_both_signatures(sim: SimulatorProcess) -> None:
    signed = requests.get(
        sim.create_url, headers={"Cookie": "_U=abc; MUID=1", "x-forwarded-for": "1.2.3.4"}, timeout=5
    )
    anonymous = requests.get(sim.create_url + "?bundleVersion=1.1648.0", timeout=5)

    assert re.fullmatch(r"51D\|BingProd\|[0-9A-F]{64}", signed.json()["conversationId"])
    assert re.fullmatch(
        r"51D\|BingProdUnAuthenticatedUsers\|[0-9A-F]{64}", anonymous.json()["conversationId"]
    )
    assert re.fullmatch(r"[1-9]\d{15}", signed.json()["clientId"])
    encrypted = signed.headers["X-Sydney-Encryptedconversationsignature"]
    assert all(char in encrypted for char in "+/=")
    assert signed.headers["X-Sydney-Conversationsignature"]
    assert signed.headers["Set-Cookie"].startswith("MUIDB=")
    assert sim.stats()["creates"] == 2


def test_create_with_revoked_cookie_is_unauthorized(sim: SimulatorProcess) -> None:
    response = requests.get(sim.create_url, headers={"Cookie": "MUID=1; _U=revoked"}, timeout=5)

    assert response.status_code == 200
    assert response.json() == {
        "result": {
            "value": "UnauthorizedRequest",
            "message": "Sorry, you need to login first to access this service.",
        }
    }
    assert sim.conversations() == []


# -- handshake, framing, validation -----------------------------------------------------------


def test_handshake_must_come_first(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted, handshake=False)
    ws.send(frame(invocation(conv, "hi")))

    reply = read(ws)

    assert reply.ending in ("close", "lost") and reply.messages == []
    assert any("handshake" in violation for violation in sim.stats()["violations"])


def test_pings_are_echoed_and_coalesced_client_records_are_split(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted, handshake=False)
    ws.send(frame({"protocol": "json", "version": 1}, {"type": 6}))

    assert ws.recv() == "{}" + RS
    assert ws.recv() == '{"type":6}' + RS
    ws.close()
    assert sim.stats()["violations"] == []


def test_duplicate_origin_headers_are_a_violation_not_a_refusal(sim: SimulatorProcess) -> None:
    ws = websocket.create_connection(sim.chathub_url, timeout=5, header=["Origin: https://www.bing.com"])
    ws.send(frame({"protocol": "json", "version": 1}))

    assert ws.recv() == "{}" + RS
    ws.close()
    assert any("Origin" in violation for violation in sim.stats()["violations"])


@pytest.mark.parametrize("how", ["wrong", "missing", "not-url-encoded"])
def test_bad_access_token_is_unauthorized(sim: SimulatorProcess, how: str) -> None:
    conv = create(sim)
    token = {"wrong": "nope", "missing": None, "not-url-encoded": conv.encrypted}[how]
    ws = connect(sim, token, quote_token=how != "not-url-encoded")
    ws.send(frame(invocation(conv, "hi", invocation_id="7")))

    reply = read(ws)

    assert reply.result["value"] == "UnauthorizedRequest"
    assert reply.result["message"] == (
        "The conversationSignature is not set and is required to ensure that you have permission "
        "to use our APIs. IsAuthenticated=False. App ID="
    )
    assert reply.final["invocationId"] == "7" and reply.records[-1] == {"type": 3, "invocationId": "7"}
    assert sim.conversation(conv.id)["turns"] == []


def test_unknown_conversation_is_invalid_session_in_one_message(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ghost = Conv("51D|BingProd|" + "AB" * 32, conv.client_id, conv.signature, conv.encrypted)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(ghost, "hi", invocation_id="11", start=False)))

    reply = read(ws)

    assert len(reply.messages) == 1 and [r["type"] for r in reply.messages[0]] == [2, 3]
    assert reply.final["item"]["firstNewMessageIndex"] is None
    assert reply.result["value"] == "InvalidSession"
    assert reply.result["message"] == (
        f"Conversation '{ghost.id}' doesn't exist or has expired. Conversations expire after 06:00:00."
    )


def test_is_start_of_session_must_match_the_conversation(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "hi", start=False)

    assert reply.result["value"] == "InvalidRequest"
    assert any("isStartOfSession" in violation for violation in sim.stats()["violations"])
    assert turn(sim, conv, "hi").result["value"] == "Success"
    assert turn(sim, conv, "again", start=True).result["value"] == "InvalidRequest"


def test_participant_must_be_the_client_id(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "hi", participant={"id": "123"})

    assert reply.result["value"] == "InvalidRequest"
    assert any("participant" in violation for violation in sim.stats()["violations"])


# -- normal answers -----------------------------------------------------------------------------


def test_normal_turn_streams_cumulative_updates_then_type2_and_type3(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "Say hi")

    first = reply.records[0]
    assert first["type"] == 1 and first["target"] == "update"
    assert first["arguments"][0]["throttling"] == {
        "maxNumUserMessagesInConversation": 30,
        "numUserMessagesInConversation": 1,
        "maxNumLongDocSummaryUserMessagesInConversation": 50,
        "numLongDocSummaryUserMessagesInConversation": 0,
    }
    updates = [r["arguments"][0] for r in reply.records if r["type"] == 1 and "messages" in r["arguments"][0]]
    assert updates[0]["cursor"] == {
        "j": f"$['{updates[0]['messages'][0]['messageId']}'].adaptiveCards[0].body[0].text",
        "p": -1,
    }
    assert all("cursor" not in update for update in updates[1:])
    answers = reply.answers
    assert [a["text"] for a in answers][:3] == ["Hello!", "Hello! You", "Hello! You said:"]
    assert answers[-1]["text"] == "Hello! You said: Say hi. This is turn 1."
    assert_cumulative(reply)
    for answer in answers:
        assert (
            answer["author"] == "bot" and answer["contentOrigin"] == "DeepLeo" and "messageType" not in answer
        )
        assert answer["adaptiveCards"][0]["body"][0] == {
            "type": "TextBlock",
            "text": answer["text"],
            "wrap": True,
        }
        assert answer["messageId"] == answers[0]["messageId"]
    assert len(answers[-1]["suggestedResponses"]) == 3
    assert all("suggestedResponses" not in a for a in answers[:-1])

    item = reply.final["item"]
    assert reply.final["invocationId"] == "0"
    assert [m["author"] for m in item["messages"]] == ["user", "bot"]
    assert item["messages"][0]["text"] == "Say hi" and item["messages"][0]["from"]["id"] == conv.client_id
    assert item["messages"][1]["text"] == answers[-1]["text"]
    assert item["firstNewMessageIndex"] == 1
    assert item["throttling"]["numUserMessagesInConversation"] == 1
    assert item["conversationExpiryTime"].endswith("Z")
    assert item["result"] == {
        "value": "Success",
        "message": "Say hi",
        "serviceVersion": item["result"]["serviceVersion"],
    }
    assert reply.records[-1] == {"type": 3, "invocationId": "0"}
    assert sim.stats()["violations"] == []


def test_type2_and_type3_alternate_between_separate_and_coalesced(sim: SimulatorProcess) -> None:
    conv = create(sim)

    first, second = turn(sim, conv, "one"), turn(sim, conv, "two")

    assert [r["type"] for r in first.messages[-1]] == [3] and [r["type"] for r in first.messages[-2]] == [2]
    assert [r["type"] for r in second.messages[-1]] == [2, 3]
    assert second.final["item"]["throttling"]["numUserMessagesInConversation"] == 2
    assert second.answers[-1]["text"] == "Hello! You said: two. This is turn 2."


def test_conversation_records_turns_and_recall_lists_them(sim: SimulatorProcess) -> None:
    conv = create(sim)
    assert turn(sim, conv, "[sim:recall]").answers[-1]["text"] == "Earlier you said: nothing"
    turn(sim, conv, "My name is Ada", tone="Precise")

    reply = turn(sim, conv, "[sim:recall] what did I say?")

    assert reply.answers[-1]["text"] == "Earlier you said: [sim:recall] | My name is Ada"
    record = sim.conversation(conv.id)
    assert [t["user"] for t in record["turns"]] == [
        "[sim:recall]",
        "My name is Ada",
        "[sim:recall] what did I say?",
    ]
    assert record["turns"][1]["tone"] == "Precise" and record["turns"][1]["isStartOfSession"] is False
    assert record["turns"][0]["isStartOfSession"] is True and "galileo" in record["turns"][0]["optionsSets"]


def test_recall_reads_previous_messages_context_first(sim: SimulatorProcess) -> None:
    conv = create(sim)
    description = (
        "[system](#additional_instructions)\nBe brief.\n\n"
        "[user](#message)\nI like tea\n\n[assistant](#message)\nNoted.\n\n[user](#message)\nand cake"
    )
    previous = [
        {
            "author": "user",
            "description": description,
            "contextType": "WebPage",
            "messageType": "Context",
            "messageId": "discover-web--page-ping-mriduna-----",
        }
    ]

    reply = turn(sim, conv, "[sim:recall]", previousMessages=previous)

    assert reply.answers[-1]["text"] == "Earlier you said: I like tea | and cake (system: Be brief.)"
    record = sim.conversation(conv.id)
    assert record["context"] == [description]
    assert record["turns"][0]["previousMessages"] == previous
    invocation = sim.last_invocation()
    assert invocation is not None and invocation["previousMessages"] == previous


def test_words_per_update_is_configurable(sim: SimulatorProcess) -> None:
    sim.configure(words_per_update=3)
    conv = create(sim)

    texts = [a["text"] for a in turn(sim, conv, "hi").answers]

    assert texts == [
        "Hello! You said:",
        "Hello! You said: hi. This is",
        "Hello! You said: hi. This is turn 1.",
    ]


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "value", "message"),
    [
        ("throttled", "Throttled", "Request is throttled."),
        ("captcha", "CaptchaChallenge", "User needs to solve CAPTCHA to continue."),
        ("unauthorized", "UnauthorizedRequest", "Sorry, you need to login first to access this service."),
        ("internal", "InternalError", "ServiceClient failure for ChatGpt. Cancellation not requested"),
    ],
)
def test_error_faults(sim: SimulatorProcess, prefix: str, value: str, message: str) -> None:
    conv = create(sim)

    reply = turn(sim, conv, f"[sim:{prefix}] hello", invocation_id="3")

    assert [r["type"] for r in reply.records] == [2, 3]
    item = reply.final["item"]
    assert item["firstNewMessageIndex"] is None and item["conversationId"] == conv.id
    assert item["result"]["value"] == value
    assert item["result"]["message"] == item["result"]["error"] == message
    assert reply.final["invocationId"] == "3"
    assert sim.conversation(conv.id)["turns"] == []


def test_invalid_session_fault_is_one_message(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:invalid_session] hi")

    assert len(reply.messages) == 1 and [r["type"] for r in reply.messages[0]] == [2, 3]
    assert reply.result["value"] == "InvalidSession" and conv.id in reply.result["message"]


def test_disconnect_sends_type7_then_closes(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(conv, "[sim:disconnect] tell me a story")))

    reply = read(ws)

    assert reply.ending == "close"
    assert 1 <= len(reply.answers) <= 3
    assert reply.records[-1] == {
        "type": 7,
        "error": "Connection closed with an error.",
        "allowReconnect": True,
    }
    assert all(r["type"] != 2 for r in reply.records)
    assert sim.conversation(conv.id)["turns"] == []


def test_drop_closes_abruptly_without_type2(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(conv, "[sim:drop] tell me a story")))

    reply = read(ws)

    assert reply.ending == "lost"
    assert len(reply.answers) == 3 and all(r["type"] == 1 for r in reply.records)
    assert sim.conversation(conv.id)["turns"] == []


def test_slow_and_long_chain(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:slow=0.1][sim:long=4] ignored")

    assert [a["text"] for a in reply.answers] == ["w1", "w1 w2", "w1 w2 w3", "w1 w2 w3 w4"]
    answer_times = reply.times[1:5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(answer_times)]
    assert min(gaps) >= 0.08
    assert sim.conversation(conv.id)["turns"][0]["bot"] == "w1 w2 w3 w4"


def test_apology_retracts_the_streamed_answer(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:apology] something edgy")

    answers = reply.answers
    assert len(answers) == 4
    assert all(a["contentOrigin"] == "DeepLeo" for a in answers[:-1])
    assert answers[-1]["text"] == APOLOGY and answers[-1]["contentOrigin"] == "Apology"
    assert {a["messageId"] for a in answers} == {answers[0]["messageId"]}
    assert reply.result["value"] == "Success"
    last_bot = reply.final["item"]["messages"][-1]
    assert last_bot["text"] == APOLOGY and last_bot["contentOrigin"] == "Apology"


def test_refuse_sends_only_the_apology(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:refuse] something forbidden")

    assert [a["text"] for a in reply.answers] == [APOLOGY]
    assert reply.answers[0]["contentOrigin"] == "Apology"
    assert reply.final["item"]["messages"][-1]["contentOrigin"] == "Apology"


def test_search_streams_progress_then_a_cited_answer(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:search] Cake recipe")

    kinds = [a.get("messageType") for a in reply.answers]
    assert kinds[:3] == ["InternalSearchQuery", "InternalSearchResult", "InternalLoaderMessage"]
    assert set(kinds[3:]) == {None}
    assert reply.answers[0]["text"] == "Searching the web for: `Cake recipe`"
    assert reply.answers[0]["adaptiveCards"][0]["body"][0]["inlines"][0]["text"] == reply.answers[0]["text"]
    assert json.loads(reply.answers[1]["text"])["web_search_results"]
    final = reply.answers[-1]
    assert "[^1^]" in final["text"] and "[^2^]" in final["text"]
    card = final["adaptiveCards"][0]["body"][0]["text"]
    assert card.startswith('[1]: https://example.com/sim/one ""\n[2]: https://example.org/sim/two ""\n\n')
    assert "[^1^][1]" in card
    attributions = final["sourceAttributions"]
    assert [a["seeMoreUrl"] for a in attributions] == [
        "https://example.com/sim/one",
        "https://example.org/sim/two",
    ]
    assert set(attributions[0]) == {
        "providerDisplayName",
        "seeMoreUrl",
        "searchQuery",
        "urlSignature",
        "provider",
    }
    item_messages = reply.final["item"]["messages"]
    answer = next(m for m in item_messages if m["author"] == "bot" and "messageType" not in m)
    assert answer["adaptiveCards"][0]["body"][-1]["id"] == "AttributionsTextBlockID"
    assert "groundingInfo" in item_messages[2]


def test_hang_sends_nothing_and_keeps_the_socket_open(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(conv, "[sim:hang] hi")))

    reply = read(ws, timeout=0.4)

    assert reply.ending == "timeout" and reply.messages == []
    assert sim.stats()["open_sockets"] == 1
    ws.close()
    deadline = time.monotonic() + 3
    while sim.stats()["open_sockets"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.stats()["open_sockets"] == 0


def test_hang_after_streams_k_updates_then_goes_silent(sim: SimulatorProcess) -> None:
    conv = create(sim)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(conv, "[sim:hang_after=2] hi")))

    reply = read(ws, timeout=0.5)
    ws.close()

    assert reply.ending == "timeout"
    assert [a["text"] for a in reply.answers] == ["Hello!", "Hello! You"]


def test_disengaged_ends_the_conversation(sim: SimulatorProcess) -> None:
    conv = create(sim)

    reply = turn(sim, conv, "[sim:disengaged] hi")
    later = turn(sim, conv, "are you there?")

    assert reply.answers[-1]["messageType"] == "Disengaged"
    assert reply.answers[-1]["text"].startswith("I'm sorry but I prefer not to continue this conversation.")
    assert reply.result["value"] == "Success"
    assert later.answers == []
    assert later.final["item"]["messages"][-1]["contentOrigin"] == "TurnLimiter"


def test_stamp_appends_send_times(sim: SimulatorProcess) -> None:
    conv = create(sim)
    before = time.time()

    reply = turn(sim, conv, "[sim:stamp=3] go")

    texts = [a["text"] for a in reply.answers]
    stamps = [float(token) for token in texts[-1].split()]
    assert len(texts) == 3 and len(stamps) == 3
    assert texts[1] == texts[0] + f" {stamps[1]:.6f}"
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time()
    assert re.fullmatch(r"( \d+\.\d{6}){3}", texts[-1])


def test_unknown_prefix_is_a_violation(sim: SimulatorProcess) -> None:
    conv = create(sim)

    turn(sim, conv, "[sim:nonsense] hi")

    assert any("[sim:nonsense]" in violation for violation in sim.stats()["violations"])


# -- lifecycle ------------------------------------------------------------------------------


def test_turn_limit_answers_with_the_turn_limiter(sim: SimulatorProcess) -> None:
    sim.configure(max_turns=2)
    conv = create(sim)
    turn(sim, conv, "one")
    turn(sim, conv, "two")

    reply = turn(sim, conv, "three")

    assert reply.answers == []
    item = reply.final["item"]
    assert item["result"]["value"] == "Success"
    assert (
        item["messages"][-1]["text"] == TURN_LIMIT and item["messages"][-1]["contentOrigin"] == "TurnLimiter"
    )
    assert item["throttling"]["numUserMessagesInConversation"] == 2
    assert item["throttling"]["maxNumUserMessagesInConversation"] == 2
    assert len(sim.conversation(conv.id)["turns"]) == 2


def test_conversations_expire_on_the_simulator_clock(sim: SimulatorProcess) -> None:
    conv = create(sim)
    assert turn(sim, conv, "hi").result["value"] == "Success"
    sim.configure(clock_offset=6 * 3600 + 1)

    reply = turn(sim, conv, "still there?")

    assert reply.result["value"] == "InvalidSession"
    assert reply.result["message"].endswith("Conversations expire after 06:00:00.")


def test_server_closes_a_lingering_socket(sim: SimulatorProcess) -> None:
    sim.configure(linger=0.2)
    conv = create(sim)
    ws = connect(sim, conv.encrypted)
    ws.send(frame(invocation(conv, "hi")))
    assert read(ws).ending == "type3"

    assert read(ws, timeout=3).ending == "close"


def test_control_api(sim: SimulatorProcess) -> None:
    assert sim.health()
    assert sim.last_invocation() is None
    conv = create(sim)
    turn(sim, conv, "hi")

    stats = sim.stats()
    assert (stats["creates"], stats["sockets"], stats["invocations"]) == (1, 1, 1)
    assert sim.conversations() == [conv.id]
    with pytest.raises(LookupError):
        sim.conversation("51D|BingProd|nope")
    invocation = sim.last_invocation()
    assert invocation is not None and invocation["message"]["text"] == "hi"
    config = sim.configure(max_turns=5, clock_offset=10, token_delay=0.001, expiry_seconds=60)
    assert (config["max_turns"], config["clock_offset"], config["expiry_seconds"]) == (5, 10.0, 60.0)
    assert requests.post(f"{sim.http_url}/_sim/config", json={"bogus": 1}, timeout=5).status_code == 400
    assert requests.post(f"{sim.http_url}/_sim/config?max_turns=4", timeout=5).json()["max_turns"] == 4

    sim.reset()

    assert sim.conversations() == [] and sim.stats()["creates"] == 0
    assert requests.get(f"{sim.http_url}/_sim/config", timeout=5).json()["max_turns"] == 30


def test_many_concurrent_sessions_stream_at_once(sim: SimulatorProcess) -> None:
    sim.configure(token_delay=0.02)
    convs = [create(sim) for _ in range(100)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        replies = list(pool.map(lambda conv: turn(sim, conv, "hi", timeout=10), convs))

    assert all(r.ending == "type3" and r.result["value"] == "Success" for r in replies)
    assert sim.stats()["sockets"] == 100


# -- what the gateway's priming and the benchmarks need -----------------------------------------


def test_a_priming_part_is_answered_briefly_and_the_last_part_answers_the_message(
    sim: SimulatorProcess,
) -> None:
    sim.configure(token_delay=0.2)  # an echo of the part would take minutes at this speed
    conv = create(sim)
    part = "[Context part 1 of 2. Read it and reply only with OK.]\n\n" + "rule " * 2000
    started = time.monotonic()
    assert [a["text"] for a in turn(sim, conv, part).answers] == ["OK."]
    assert time.monotonic() - started < 2
    last = "[Context part 2 of 2, the last. Answer it now.]\n\nmore rules\n\n[My message]\nsay hi"
    assert turn(sim, conv, last).answers[-1]["text"] == "Hello! You said: say hi. This is turn 2."
    sim.configure(token_delay=0.001, words_per_update=500)  # the recall lists the long part too
    updated = "[Updated instructions. Follow these.]\nbe kind\n\n[My message]\n[sim:recall] who am I?"
    assert turn(sim, conv, updated).answers[-1]["text"].startswith("Earlier you said: ")


def test_turn_seconds_is_the_least_time_a_turn_takes_and_stats_add_it_up(sim: SimulatorProcess) -> None:
    sim.configure(turn_seconds=0.6, token_delay=0.01)
    conv = create(sim)
    started = time.monotonic()
    reply = turn(sim, conv, "hi")
    took = time.monotonic() - started
    assert reply.answers[-1]["text"] == "Hello! You said: hi. This is turn 1."
    assert 0.6 <= took < 2.0
    stats = sim.stats()
    assert 0.6 <= stats["turn_seconds"] < took and stats["chathub"]["turn_seconds"] == stats["turn_seconds"]
