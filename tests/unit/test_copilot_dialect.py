"""The Copilot dialect against the recorded event sequences of the reference (B7), no sockets."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import pytest

from service.errors import ApiError
from workers.upstream import challenges, copilot
from workers.upstream.context import TurnInput, flatten_context
from workers.upstream.copilot_conversation import CopilotHandle, parse_create_response
from workers.upstream.copilot_decode import Challenge, CopilotDecoder
from workers.upstream.copilot_failures import InvalidEvent, ModeNotAvailable
from workers.upstream.errors import (
    ChallengeRequired,
    ProtocolError,
    RegionBlocked,
    Throttled,
    Unauthorized,
    UpstreamError,
)
from workers.upstream.events import Citation, Done, Image, Progress, Suggestions, TextDelta

CONV = "dRUXwuM545tff65JPZ3rn"
USER_ID = "17Wzuonj3Q54L3oYsbPdC"
BOT_ID = "cunqiwyXHxKALffniSEnf"
SEED = "269f08c72d841a24d839b0d55d2dadbb3551d7f89d35991f4bef499c893b253d"
IMAGE_URL = "https://copilot.microsoft.com/th/id/BCO.42a11350-302d-46b2-909f-43b45f2b15d5.png"


def received(**fields: Any) -> dict[str, Any]:
    return {"event": "received", "conversationId": CONV, "messageId": USER_ID, "id": "0", **fields}


def start(message_id: str = BOT_ID) -> dict[str, Any]:
    return {"event": "startMessage", "conversationId": CONV, "messageId": message_id, "id": "1"}


def append(text: str, message_id: str = BOT_ID) -> dict[str, Any]:
    return {"event": "appendText", "messageId": message_id, "partId": "0", "text": text, "id": "2"}


def feed_all(decoder: CopilotDecoder, *events: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        out.extend(decoder.feed(event))
    return out


def deltas(events: list[Any]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


def b71() -> list[dict[str, Any]]:
    return [
        {"event": "connected"},
        received(createdAt="2025-05-02T10:00:00.000Z"),
        start(),
        append("Received"),
        append("! Test"),
        append(" successful. Feel free.\n"),
        {"event": "partCompleted", "messageId": BOT_ID, "partId": "0", "id": "5"},
        {"event": "done", "messageId": BOT_ID, "id": "6"},
        {"event": "titleUpdate", "conversationId": CONV, "title": "Test message receipt confirmation"},
        {
            "event": "suggestedFollowups",
            "messageId": BOT_ID,
            "suggestions": ["Can you show me what you can do?", "Tell me a fun fact"],
            "id": "8",
        },
    ]


# --- outgoing frames ---------------------------------------------------------------------------


def test_preamble_frames_are_the_recorded_ones() -> None:
    options = json.loads(copilot.set_options())
    assert options["event"] == "setOptions"
    # B5b: the 2026 browser's six features, in its order; the cards the captures name.
    assert options["supportedFeatures"] == [
        "partial-generated-images",
        "composer-prefill-conversation-action",
        "composer-send-conversation-action-v2",
        "side-by-side-comparison",
        "session-duration-nudge",
        "compose-email-html",
    ]
    # The browser sends 28 cards; the reference names these 17 (B1.3's ten and four newer, B5b's rest).
    assert set(options["supportedCards"]) == {
        "weather", "local", "image", "sports", "video", "ads", "safetyHelpline", "quiz", "finance", "recipe",
        "healthcareEntity", "healthcareInfo", "chart", "personal",
        "powerPointCreator", "createCalendarEvent", "flashcard",
    }  # fmt: skip
    assert options["ads"]["supportedTypes"][:2] == ["text", "product"]
    # B1.3: newer captures add these two, empty.
    assert (options["supportedUIComponents"], options["supportedActions"]) == ({}, [])
    assert copilot.report_local_consents() == '{"event":"reportLocalConsents","grantedConsents":[]}'


def test_send_frame_matches_b71_exactly() -> None:
    frame = copilot.send(CONV, "This is an automated test message.", "chat", {})
    assert frame == (
        '{"event":"send","conversationId":"dRUXwuM545tff65JPZ3rn",'
        '"content":[{"type":"text","text":"This is an automated test message."}],'
        '"mode":"chat","context":{}}'
    )
    assert "\x1e" not in frame
    parsed = json.loads(frame)
    assert not {"tone", "toneId", "messageId"} & parsed.keys()


def test_send_keeps_unicode_and_the_mode() -> None:
    parsed = json.loads(copilot.send(CONV, "Grüß dich 😊", "reasoning", {"edge": {"pageContent": "x"}}))
    assert parsed["content"] == [{"type": "text", "text": "Grüß dich 😊"}]
    assert (parsed["mode"], parsed["context"]) == ("reasoning", {"edge": {"pageContent": "x"}})


def test_challenge_response_echoes_the_id() -> None:
    assert (
        copilot.challenge_response("hashcash", "0", "0.1")
        == '{"event":"challengeResponse","token":"0","method":"hashcash","id":"0.1"}'
    )
    assert copilot.challenge_response("copilot", "7", None) == (
        '{"event":"challengeResponse","token":"7","method":"copilot"}'
    )


# --- URL and context ---------------------------------------------------------------------------


def test_chat_url_https_becomes_wss_with_session_id() -> None:
    url = copilot.chat_url("https://copilot.microsoft.com", client_session_id="8c0e-1")
    assert url == "wss://copilot.microsoft.com/c/api/chat?api-version=2&clientSessionId=8c0e-1"


def test_chat_url_http_becomes_ws_and_carries_the_token_and_flags() -> None:
    url = copilot.chat_url(
        "http://127.0.0.1:8123",
        client_session_id="s",
        access_token="eyJ a+b/c=",
        with_page_context=True,
    )
    assert url == (
        "ws://127.0.0.1:8123/c/api/chat?api-version=2&clientSessionId=s&accessToken=eyJ%20a%2Bb%2Fc%3D"
        "&features=-,ncedge,edgepagecontext&setflight=-,ncedge,edgepagecontext&ncedge=1"
    )


def test_chat_url_keeps_a_base_path_and_rejects_other_schemes() -> None:
    assert copilot.chat_url("https://proxy.example/copilot/", client_session_id="s").startswith(
        "wss://proxy.example/copilot/c/api/chat?"
    )
    with pytest.raises(ValueError):
        copilot.chat_url("ftp://copilot.microsoft.com", client_session_id="s")


def test_fresh_turn_with_history_puts_it_in_edge_page_context() -> None:
    turn = TurnInput("Next?", history=(("user", "Hi"), ("assistant", "Hello!")), system="Be brief.")
    context = copilot.turn_context(turn, fresh=True)
    assert context == {
        "edge": {
            "pageTitle": "Conversation so far",
            "pageContent": flatten_context(turn.history, turn.system, turn.max_context_chars),
            "pageUrl": "https://copilot.microsoft.com/",
        }
    }
    assert "[user](#message)\nHi" in context["edge"]["pageContent"]
    assert "[system](#additional_instructions)\nBe brief." in context["edge"]["pageContent"]


def test_context_is_empty_without_history_or_after_the_first_turn() -> None:
    assert copilot.turn_context(TurnInput("Hi"), fresh=True) == {}
    assert copilot.turn_context(TurnInput("Hi", history=(("user", "a"),)), fresh=False) == {}
    assert copilot.turn_context(TurnInput("Hi", system="Be brief."), fresh=True)["edge"]["pageContent"]


# --- framing ---------------------------------------------------------------------------------


def test_split_events_handles_concatenation_separators_and_bytes() -> None:
    message = '{"event":"a"}{"event":"b"}\x1e \n{"event":"c","x":{"y":[1]}}\x1e'
    assert copilot.split_events(message) == [{"event": "a"}, {"event": "b"}, {"event": "c", "x": {"y": [1]}}]
    assert copilot.split_events(b'{"event":"ping"}') == [{"event": "ping"}]
    assert copilot.split_events("") == [] and copilot.split_events(" \x1e") == []


@pytest.mark.parametrize("garbage", ["<html>", '{"event":"a"} trailing', "[1,2]", '{"event":"cut', "42"])
def test_split_events_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ProtocolError):
        copilot.split_events(garbage)


def test_event_stream_carries_an_object_cut_across_messages() -> None:
    stream = copilot.EventStream()
    assert stream.feed('{"event":"a"}{"event":"appendText","te') == [{"event": "a"}]
    assert stream.feed('xt":"Hi"}\x1e{"event":"b","ok":tr') == [{"event": "appendText", "text": "Hi"}]
    assert stream.feed("ue}") == [{"event": "b", "ok": True}]
    assert stream.feed("") == []


@pytest.mark.parametrize("garbage", ["<html>", '{"event":"a"} trailing', "[1,2]", "{nope}"])
def test_event_stream_still_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ProtocolError):
        copilot.EventStream().feed(garbage)


def test_event_stream_rejects_a_cut_that_never_ends() -> None:
    stream = copilot.EventStream(max_carry=30)
    stream.feed('{"event":"x","text":"')
    with pytest.raises(ProtocolError, match="longer than 30"):
        stream.feed("y" * 30)
    stream = copilot.EventStream()
    stream.feed('{"event":"x","text":"abc')
    with pytest.raises(ProtocolError):  # a new object cannot start inside the cut one
        stream.feed('{"event":"next"}')


# --- conversation create ----------------------------------------------------------------------


def test_create_response_gives_a_fresh_handle() -> None:
    handle = parse_create_response(
        200, {}, b'{"id":"dRUXwuM545tff65JPZ3rn"}', account="env-3", now=99.0
    )
    assert handle == CopilotHandle(CONV, account="env-3", turns=0, created=99.0)
    assert handle.fresh and not handle.is_expired(10**12) and not handle.exhausted


@pytest.mark.parametrize("status", [401, 403])
def test_create_rejections_say_what_to_refresh(status: int) -> None:
    with pytest.raises(Unauthorized) as caught:
        parse_create_response(status, {}, b"", account="env-2")
    message = str(caught.value)
    assert str(status) in message and "UPSTREAM_COOKIES" in message and "COPILOT_ACCESS_TOKEN" in message


def test_create_failures() -> None:
    with pytest.raises(Throttled):
        parse_create_response(429, {}, b"")
    with pytest.raises(UpstreamError, match="HTTP 500"):
        parse_create_response(500, {}, b"")
    with pytest.raises(UpstreamError, match="non-JSON body \\(text/html"):
        parse_create_response(200, {"Content-Type": "text/html"}, b"<html>Just a moment</html>")
    with pytest.raises(ProtocolError):
        parse_create_response(200, {}, b'{"title":"no id"}')
    with pytest.raises(ProtocolError):
        parse_create_response(200, {}, b"[]")


# --- handle -----------------------------------------------------------------------------------


def test_handle_json_round_trip_and_tolerance() -> None:
    handle = CopilotHandle(CONV, account="env-4", turns=2, created=12.5)
    data = handle.to_json()
    assert data == {
        "dialect": "copilot",
        "conversation_id": CONV,
        "account": "env-4",
        "turns": 2,
        "created": 12.5,
        "images": {},
    }
    assert CopilotHandle.from_json(json.loads(json.dumps(data))) == handle
    assert CopilotHandle.from_json({"conversation_id": CONV, "future_field": 1}) == CopilotHandle(CONV)
    assert not handle.fresh
    with pytest.raises(ValueError):
        CopilotHandle.from_json({"dialect": "copilot"})


# --- B7.1 / B7.2 answers -------------------------------------------------------------------------


def test_b71_streams_deltas_then_suggestions_and_done() -> None:
    decoder = CopilotDecoder()
    events = feed_all(decoder, *b71())
    assert deltas(events) == ["Received", "! Test", " successful. Feel free.\n"]
    assert events[-1] == Suggestions(("Can you show me what you can do?", "Tell me a fun fact"))
    assert decoder.done and decoder.suggested
    assert decoder.title == "Test message receipt confirmation"
    assert decoder.finish() == Done("Received! Test successful. Feel free.\n", "stop")
    assert decoder.pending_challenge is None


def test_text_of_other_messages_is_ignored() -> None:
    decoder = CopilotDecoder()
    events = feed_all(
        decoder,
        received(),
        append("echo of the user", USER_ID),
        start(),
        append("Hi"),
        append("stray", "someone-else"),
        {"event": "replaceText", "messageId": BOT_ID, "partId": "0", "text": "Rewritten"},
        append(" there"),
        {"event": "done", "messageId": BOT_ID},
        append(" after done"),
    )
    assert deltas(events) == ["Hi", " there"]
    assert decoder.finish().text == "Hi there"


def test_text_without_start_message_is_adopted_but_never_the_users() -> None:
    decoder = CopilotDecoder()
    events = feed_all(decoder, received(), append("echo", USER_ID), append("Answer", "m9"), append("x", "m8"))
    assert deltas(events) == ["Answer"]


def test_b72_citations_are_numbered_by_unique_url() -> None:
    def citation(url: str, title: str = "") -> dict[str, Any]:
        return {"event": "citation", "messageId": "m2", "partId": "0", "title": title, "url": url}

    decoder = CopilotDecoder()
    events = feed_all(
        decoder,
        start("m2"),
        append("The BBC has an easy sponge recipe", "m2"),
        citation("https://www.bbc.co.uk/food/cake", "Cake recipes - BBC Food"),
        append(".", "m2"),
        citation("https://www.bbc.co.uk/food/cake", "again"),
        citation("https://example.org/sponge"),
        {"event": "citation", "title": "no url"},
    )
    assert [e for e in events if isinstance(e, Citation)] == [
        Citation(1, "https://www.bbc.co.uk/food/cake", "Cake recipes - BBC Food"),
        Citation(2, "https://example.org/sponge", "https://example.org/sponge"),
    ]
    assert deltas(events) == ["The BBC has an easy sponge recipe", "."]


def test_chain_of_thought_is_reasoning_progress() -> None:
    events = CopilotDecoder().feed({"event": "chainOfThought", "text": "Weighing options"})
    assert events == [Progress("reasoning", "Weighing options")]


def test_noise_events_yield_nothing() -> None:
    decoder = CopilotDecoder()
    for event in ({"event": "ping"}, {"event": "telemetry", "x": 1}, {"event": "brandNew"}, {"id": "7"}):
        assert decoder.feed(event) == []
    assert not decoder.done


# --- B7.3 throttling ----------------------------------------------------------------------------

B73 = (
    '{"event":"chatMessageError","errorCode":"throttled","errorDetail":{"type":"throttled",'
    '"nextAvailableAt":"2026-08-13T15:17:13+00:00"}}'
    '{"event":"challenge","method":null,"parameter":null,"id":"0.0002"}'
)
NEXT_AVAILABLE = datetime.fromisoformat("2026-08-13T15:17:13+00:00").timestamp()


def test_b73_throttle_wins_over_the_null_challenge_in_the_same_message() -> None:
    decoder = CopilotDecoder(account="4", clock=lambda: NEXT_AVAILABLE - 300)
    with pytest.raises(Throttled) as caught:
        decoder.feed_message(copilot.split_events(B73))
    assert caught.value.retry_after == pytest.approx(300)
    assert "#4" in str(caught.value) and "2026-08-13T15:17:13" in str(caught.value)


def test_throttle_wins_even_when_the_challenge_comes_first() -> None:
    first, second = copilot.split_events(B73)
    with pytest.raises(Throttled):
        CopilotDecoder(clock=lambda: NEXT_AVAILABLE - 5).feed_message([second, first])


@pytest.mark.parametrize(
    ("next_available", "expected"), [("2020-01-01T00:00:00Z", 1.0), ("soon", 60.0), (None, 60.0)]
)
def test_throttle_retry_after_floor_and_default(next_available: str | None, expected: float) -> None:
    detail: dict[str, str | None] = {"type": "throttled", "nextAvailableAt": next_available}
    event = {"event": "chatMessageError", "errorCode": "throttled", "errorDetail": detail}
    with pytest.raises(Throttled) as caught:
        CopilotDecoder(clock=lambda: NEXT_AVAILABLE).feed(event)
    assert caught.value.retry_after == expected


# --- B7.4 / B7.5 challenges ------------------------------------------------------------------------


def hashcash(parameter: str, challenge_id: str = "0.1") -> dict[str, Any]:
    return {"event": "challenge", "method": "hashcash", "parameter": parameter, "id": challenge_id}


def brute_bits(seed: str, bits: int) -> str:
    """An independent reading of variant (b): count leading zero bits of the binary digest."""
    n = 0
    while True:
        digest = hashlib.sha256(f"{seed}{n}".encode()).digest()
        binary = "".join(f"{byte:08b}" for byte in digest)
        if len(binary) - len(binary.lstrip("0")) >= bits:
            return str(n)
        n += 1


def brute_hex(seed: str, digits: int) -> str:
    n = 0
    while hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()[:digits] != "0" * digits:
        n += 1
    return str(n)


def test_b74_seed_at_difficulty_1_gives_token_0_under_variant_b() -> None:
    assert hashlib.sha256(f"{SEED}0".encode()).digest()[0] < 0x80  # the capture's accepted answer
    assert challenges.solve_hashcash_bits(f"{SEED}:1") == "0"
    assert challenges.HASHCASH is challenges.solve_hashcash_bits
    assert challenges.solve_challenge("hashcash", f"{SEED}:1") == "0"


@pytest.mark.parametrize("bits", [0, 3, 8, 12])
def test_variant_b_matches_brute_force(bits: int) -> None:
    for seed in (SEED, "abc", "x:y"):
        assert challenges.solve_hashcash_bits(f"{seed}:{bits}") == brute_bits(seed, bits)


@pytest.mark.parametrize("digits", [0, 1, 2])
def test_variant_a_matches_brute_force(digits: int) -> None:
    for seed in (SEED, "abc"):
        assert challenges.solve_hashcash_hex(f"{seed}:{digits}") == brute_hex(seed, digits)
    assert challenges.solve_hashcash_hex(f"{SEED}:1") == "19"  # why (a) cannot be what the capture used


def test_hashcash_splits_on_the_last_colon_and_refuses_nonsense() -> None:
    assert challenges.solve_hashcash_bits("a:b:4") == brute_bits("a:b", 4)
    for parameter in ("no-colon", f"{SEED}:x", f"{SEED}:-1", None):
        with pytest.raises(ProtocolError):
            challenges.solve_hashcash_bits(parameter)
    with pytest.raises(ProtocolError, match="refused"):
        challenges.solve_hashcash_bits(f"{SEED}:33")
    with pytest.raises(ProtocolError, match="refused"):
        challenges.solve_hashcash_hex(f"{SEED}:9")


def test_a_hard_hashcash_is_solved_in_a_child_process_and_an_absurd_one_refused() -> None:
    bits = challenges.INLINE_BITS + 2
    assert challenges.solve_challenge("hashcash", f"{SEED}:{bits}") == brute_bits(SEED, bits)
    with pytest.raises(ProtocolError, match="refused"):
        challenges.solve_challenge("hashcash", f"{SEED}:{challenges.MAX_HASHCASH_BITS + 1}")


@pytest.mark.parametrize(("a", "token"), [("5", "16"), ("10", "18"), ("3", "9"), ("7.5", "16"), ("0", "0")])
def test_arithmetic_challenge(a: str, token: str) -> None:
    assert challenges.solve_arithmetic(a) == token
    assert challenges.solve_challenge("copilot", a) == token


@pytest.mark.parametrize("a", ["1e308", "nan", "inf", "-inf", "-1e300", "100001"])
def test_arithmetic_challenge_refuses_non_finite_and_absurd_numbers(a: str) -> None:
    """Audit round 2 item 19: these were an OverflowError/ValueError (a 500); now the turn fails as a
    protocol error, like any challenge the gateway cannot answer."""
    with pytest.raises(ProtocolError, match="out of range"):
        challenges.solve_challenge("copilot", a)


def test_arithmetic_challenge_rejects_non_numbers() -> None:
    with pytest.raises(ProtocolError):
        challenges.solve_arithmetic("seven")
    with pytest.raises(ValueError):
        challenges.solve_challenge("cloudflare", "x")


def test_answerable_challenge_is_handed_to_the_client_once() -> None:
    decoder = CopilotDecoder()
    assert decoder.feed(hashcash(f"{SEED}:1")) == []
    assert decoder.pending_challenge == Challenge("hashcash", f"{SEED}:1", "0.1")
    assert decoder.take_challenge() == Challenge("hashcash", f"{SEED}:1", "0.1")
    assert decoder.take_challenge() is None
    decoder.feed(hashcash(f"{SEED}:1"))  # the same challenge again: not answered twice
    assert decoder.pending_challenge is None
    events = feed_all(decoder, received(), start(), append("PROBE"), append("-OK"), {"event": "done"})
    assert deltas(events) == ["PROBE", "-OK"] and decoder.done


def test_arithmetic_challenge_is_answerable() -> None:
    decoder = CopilotDecoder()
    decoder.feed({"event": "challenge", "method": "copilot", "parameter": "5", "id": "2"})
    assert decoder.take_challenge() == Challenge("copilot", "5", "2")


def test_a_different_challenge_after_answering_is_fatal() -> None:
    decoder = CopilotDecoder()
    decoder.feed(hashcash(f"{SEED}:1"))
    decoder.take_challenge()
    with pytest.raises(ChallengeRequired, match="second"):
        decoder.feed(hashcash("other:1", "0.2"))


@pytest.mark.parametrize("method", [None, "cloudflare", "clarity"])
def test_b75_browser_challenges_fail_with_the_operator_message(method: str | None) -> None:
    decoder = CopilotDecoder(account="env-3")
    with pytest.raises(ChallengeRequired) as caught:
        decoder.feed({"event": "challenge", "method": method, "parameter": None, "id": "0.0001"})
    message = str(caught.value)
    assert "#env-3" in message
    assert "clearance required — open the upstream in the browser whose identity the account uses" in message
    assert "copy any request to the upstream as cURL" in message and "--from-curl" in message
    if method is None:
        assert "human-check (Turnstile)" in message
    assert decoder.pending_challenge is None
    assert ApiError.from_exception(caught.value).should_retry is False


# --- B7.6 rejections --------------------------------------------------------------------------------


def test_invalid_event_is_a_protocol_error() -> None:
    with pytest.raises(InvalidEvent) as caught:
        CopilotDecoder().feed({"event": "error", "errorCode": "invalid-event", "id": "0.0002"})
    assert isinstance(caught.value, ProtocolError)
    assert "invalid-event" in str(caught.value)


def test_chat_service_unavailable_is_region_blocked() -> None:
    with pytest.raises(RegionBlocked) as caught:
        CopilotDecoder().feed({"event": "error", "errorCode": "chat-service-unavailable"})
    assert str(caught.value) == (
        "Copilot is not available to this account from this region: sign in (UPSTREAM_COOKIES / "
        "COPILOT_ACCESS_TOKEN) or use an egress in a supported region"
    )


def test_unsupported_mode_is_a_400_model_not_available() -> None:
    with pytest.raises(ModeNotAvailable) as caught:
        CopilotDecoder(mode="smart").feed({"event": "error", "errorCode": "unsupported-mode"})
    error = ApiError.from_exception(caught.value)
    assert (error.status, error.code, error.error_type) == (
        400,
        "model_not_available",
        "invalid_request_error",
    )
    assert "'smart'" in str(caught.value) and "not allow" in str(caught.value)
    assert isinstance(caught.value, UpstreamError)


@pytest.mark.parametrize("field", ["message", "error"])
def test_other_error_codes_keep_code_and_text(field: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        CopilotDecoder().feed({"event": "error", "errorCode": "content-blocked", field: "Not allowed here"})
    assert str(caught.value) == "Copilot failed the turn: content-blocked: Not allowed here"
    assert type(caught.value) is UpstreamError


def test_errors_after_done_do_not_undo_the_answer() -> None:
    decoder = CopilotDecoder()
    feed_all(decoder, start(), append("Hi"), {"event": "done"}, {"event": "error", "errorCode": "x"})
    assert decoder.finish() == Done("Hi")


# --- B7.7 images ----------------------------------------------------------------------------------


def b77() -> list[dict[str, Any]]:
    part = "DEGVe5ihRQZsTpQnMNztR"
    return [
        start("m3"),
        append("Sure, here it is.", "m3"),
        {
            "event": "generatingImage",
            "messageId": "m3",
            "partId": part,
            "prompt": "a red apple",
            "progressionText": "Bringing a crisp apple to life...",
            "id": "11",
        },
        {
            "event": "partialImageGenerated",
            "messageId": "m3",
            "partId": part,
            "content": "/9j/4AAQ",
            "id": "12",
        },
        {
            "event": "imageGenerated",
            "messageId": "m3",
            "partId": part,
            "url": IMAGE_URL,
            "thumbnailUrl": f"{IMAGE_URL}/?w=270&qlt=90",
            "nextAvailableAt": None,
            "id": "14",
        },
    ]


def test_b77_image_turn_gives_an_image_and_a_markdown_link() -> None:
    decoder = CopilotDecoder()
    events = feed_all(decoder, *b77())
    image = Image(IMAGE_URL, "a red apple", f"{IMAGE_URL}/?w=270&qlt=90")
    assert events == [
        TextDelta("Sure, here it is."),
        Progress("image", "Bringing a crisp apple to life..."),
        image,
        TextDelta(f"\n\n![a red apple]({IMAGE_URL})"),
    ]
    assert decoder.partial_image == "/9j/4AAQ"
    assert decoder.image == image and not decoder.done
    # a bare close here is success: the client asks for Done with what it has
    assert decoder.finish() == Done(f"Sure, here it is.\n\n![a red apple]({IMAGE_URL})")


def test_text_after_an_image_starts_on_its_own_line() -> None:
    decoder = CopilotDecoder()
    events = feed_all(decoder, *b77()[2:], append("Enjoy!", "m3"))
    assert deltas(events) == [f"![a red apple]({IMAGE_URL})", "\n\nEnjoy!"]


# --- logging safety ------------------------------------------------------------------------------------


def test_redact_frame_blanks_secret_fields_and_values() -> None:
    frame = '{"event":"x","accessToken":"eyJhbGci.abc","cookie":"_U=zzz","note":"has secret-val"}'
    redacted = copilot.redact_frame(frame, ["secret-val"])
    assert "eyJhbGci" not in redacted and "_U=zzz" not in redacted and "secret-val" not in redacted
    assert '"accessToken":"<redacted>"' in redacted
    assert copilot.redact_frame("y" * 500, limit=10) == "y" * 10 + "…"
