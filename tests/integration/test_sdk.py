"""Official clients against the real stack: the `openai` v1 SDK and the 0.28 call shape."""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI

from tests.integration.conftest import Stack


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=30)


def test_sdk_non_streaming(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="Precise", messages=[{"role": "user", "content": "hello sdk"}], temperature=0.2
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello! You said: hello sdk. This is turn 1."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_sdk_streaming_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="Creative",
        messages=[{"role": "user", "content": "stream sdk"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! You said: stream sdk. This is turn 1."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sdk_continues_a_conversation_by_id(client: OpenAI, gateway: Stack) -> None:
    first = client.chat.completions.with_raw_response.create(
        model="Balanced", messages=[{"role": "user", "content": "my name is Ada"}]
    )
    conversation_id = first.headers["X-Conversation-Id"]
    completion_id = first.parse().id
    second = client.chat.completions.create(
        model="Balanced",
        messages=[{"role": "user", "content": "[sim:recall] who am I?"}],
        extra_body={"id": completion_id},
    )
    assert second.choices[0].message.content == "Earlier you said: my name is Ada"
    third = client.chat.completions.create(
        model="Balanced",
        messages=[{"role": "user", "content": "[sim:recall] and now?"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert third.choices[0].message.content == "Earlier you said: my name is Ada | [sim:recall] who am I?"
    assert len(gateway.upstream_users(conversation_id)) == 3
    if gateway.dialect == "bing":
        assert [t["isStartOfSession"] for t in gateway.upstream(conversation_id)["turns"]] == [
            True,
            False,
            False,
        ]


def test_sdk_raises_typed_errors(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="Balanced", messages=[{"role": "user", "content": "[sim:throttled] x"}]
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="llama-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="Balanced", messages=[], n=1)
    assert bad.value.param == "messages"


def test_legacy_0_28_call_shape(gateway: Stack) -> None:
    """openai 0.28 with `openai.api_base = "https://host"` posts to {api_base}/chat/completions."""
    response = requests.post(
        gateway.url + "/chat/completions",
        headers={
            "Authorization": "Bearer sk-legacy",
            "Content-Type": "application/json",
            "User-Agent": "OpenAI/v1 PythonBindings/0.28.1",
        },
        json={"model": "Creative", "messages": [{"role": "user", "content": "legacy"}]},
        timeout=30,
    )
    assert response.status_code == 200
    data = response.json()
    assert data["choices"][0]["message"]["content"] == "Hello! You said: legacy. This is turn 1."
    # 0.28 passes the returned id back to keep context.
    again = requests.post(
        gateway.url + "/chat/completions",
        headers={"Authorization": "Bearer sk-legacy"},
        json={
            "model": "Creative",
            "id": data["id"],
            "messages": [{"role": "user", "content": "[sim:recall] ?"}],
        },
        timeout=30,
    )
    assert again.json()["choices"][0]["message"]["content"] == "Earlier you said: legacy"
