"""Anthropic Messages with the official anthropic-python client against the real stack (both dialects)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
import requests
from anthropic import Anthropic
from anthropic.types import (
    CitationsWebSearchResultLocation,
    MessageParam,
    RawMessageDeltaEvent,
    TextDelta,
)

from tests.integration.conftest import Stack, isolated_app, sse_lines
from tests.support.sdk_types import error_body, narrow, text_block


@pytest.fixture()
def client(gateway: Stack) -> Anthropic:
    return Anthropic(base_url=gateway.url, api_key="sk-ant-anything", max_retries=0, timeout=30)


def test_create_returns_a_message(client: Anthropic) -> None:
    message = client.messages.create(
        model="Balanced",
        max_tokens=256,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "hello anthropic"}],
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == "Balanced"
    assert [block.type for block in message.content] == ["text"]
    assert text_block(message.content[0]).text == "Hello! You said: hello anthropic. This is turn 1."
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_stream_events_in_anthropic_order(client: Anthropic) -> None:
    stream = client.messages.create(
        model="Creative",
        max_tokens=256,
        messages=[{"role": "user", "content": [{"type": "text", "text": "stream anthropic"}]}],
        stream=True,
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) <= {"ping", "content_block_delta"}
    text = "".join(narrow(e.delta, TextDelta).text for e in events if e.type == "content_block_delta")
    assert text == "Hello! You said: stream anthropic. This is turn 1."
    ending = narrow(events[-2], RawMessageDeltaEvent)
    assert ending.delta.stop_reason == "end_turn" and ending.usage.output_tokens > 0


def test_messages_stream_helper_text(client: Anthropic) -> None:
    # Claude Code's model name works through the default aliases and is echoed back.
    with client.messages.stream(
        model="claude-opus-4-8", max_tokens=64, messages=[{"role": "user", "content": "helper"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == text_block(final.content[0]).text == "Hello! You said: helper. This is turn 1."
    assert final.model == "claude-opus-4-8"


def test_count_tokens(client: Anthropic) -> None:
    short = client.messages.count_tokens(model="Balanced", messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(
        model="Balanced", system="A long system prompt.", messages=[{"role": "user", "content": "hi there"}]
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_three_stateless_turns_are_one_upstream_conversation(client: Anthropic, gateway: Stack) -> None:
    history: list[MessageParam] = []
    for prompt in ("my name is Ada", "[sim:recall] who am I?", "third turn"):
        history.append({"role": "user", "content": prompt})
        raw = client.messages.with_raw_response.create(model="Balanced", max_tokens=64, messages=history)
        message = raw.parse()
        history.append({"role": "assistant", "content": text_block(message.content[0]).text})
    assert history[3]["content"] == "Earlier you said: my name is Ada"
    conversation_id = raw.headers["X-Conversation-Id"]
    assert gateway.upstream_users(conversation_id) == [
        "my name is Ada",
        "[sim:recall] who am I?",
        "third turn",
    ]


def test_errors_have_anthropic_shape(gateway: Stack, client: Anthropic) -> None:
    robot = [{"role": "robot", "content": "x"}]  # deliberately not a role the SDK's types allow
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="Balanced", max_tokens=10, messages=robot)  # type: ignore[arg-type]
    assert error_body(caught.value)["type"] == "error"
    assert error_body(caught.value)["error"]["type"] == "invalid_request_error"
    assert "messages.0.role" in error_body(caught.value)["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert error_body(missing.value)["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.RateLimitError) as throttled:
        client.messages.create(
            model="Balanced", max_tokens=10, messages=[{"role": "user", "content": "[sim:throttled] x"}]
        )
    assert error_body(throttled.value)["error"]["type"] == "rate_limit_error"
    assert throttled.value.response.headers.get("retry-after")
    # Missing max_tokens, with the query string Claude Code adds and its headers.
    response = requests.post(
        gateway.url + "/v1/messages?beta=true",
        json={"model": "Balanced", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01", "anthropic-beta": "a,b"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_auth_errors_on_messages_are_anthropic_shaped(gateway: Stack) -> None:
    with isolated_app(gateway, "auth-msgs", API_KEYS="sk-right") as (server, _env):
        body: dict[str, Any] = {
            "model": "Balanced",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
        wrong = requests.post(
            server.url + "/v1/messages", json=body, headers={"x-api-key": "sk-wrong"}, timeout=30
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["type"] == "authentication_error"
        right = requests.post(
            server.url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": "sk-right"}, timeout=30
        )
        assert right.status_code == 200 and right.json()["input_tokens"] > 0


def test_stream_wire_names_every_event(gateway: Stack) -> None:
    body: dict[str, Any] = {
        "model": "Balanced",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "w"}],
    }
    lines = sse_lines(gateway.post(body, "/v1/messages?beta=true", stream=True))
    names = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert names == [payload["type"] for payload in payloads]
    assert names[-1] == "message_stop" and "[DONE]" not in "\n".join(lines)


def test_failure_after_the_stream_began_is_an_error_event(gateway: Stack) -> None:
    body: dict[str, Any] = {"model": "Balanced", "max_tokens": 5, "stream": True}
    body["messages"] = [{"role": "user", "content": "[sim:hang_after=2] hi"}]
    lines = sse_lines(gateway.post(body, "/v1/messages", stream=True))
    names = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names
    error = json.loads(lines[-1][len("data: ") :])
    assert error["type"] == "error" and error["error"]["type"] == "timeout_error"


def test_citations_become_web_search_result_locations(client: Anthropic) -> None:
    message = client.messages.create(
        model="Balanced", max_tokens=64, messages=[{"role": "user", "content": "[sim:search] cake"}]
    )
    block = text_block(message.content[0])
    citations = block.citations
    assert citations is not None and [c.type for c in citations] == ["web_search_result_location"] * 2
    assert all(narrow(c, CitationsWebSearchResultLocation).url.startswith("https://") for c in citations)
    assert "Searching the web" not in block.text
