"""The OpenAI wire contract through the real stack: every path form, both modes, usage, headers."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import Stack, body, isolated_app, sse_data, sse_lines, streamed_text

PATHS = ["/v1/chat/completions", "/chat/completions", "/openai/chat/completions", "/api/v1/chat/completions"]


@pytest.mark.parametrize("path", PATHS)
def test_non_streaming_answer_has_openai_shape_on_every_path(gateway: Stack, path: str) -> None:
    response = gateway.post(body("ping"), path=path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    data = response.json()
    assert set(data) >= {"id", "object", "created", "model", "choices", "usage"}
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "Balanced"
    assert isinstance(data["created"], int)
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello! You said: ping. This is turn 1."
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["X-Conversation-Id"].startswith("conv_")


def test_streaming_answer_is_sse_with_role_first_finish_last_and_done(gateway: Stack) -> None:
    response = gateway.post(body("stream me", stream=True), stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-Conversation-Id"].startswith("conv_")
    assert "x-request-id" in response.headers
    chunks = sse_data(sse_lines(response))
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert streamed_text(chunks) == "Hello! You said: stream me. This is turn 1."
    assert "usage" not in chunks[0]


def test_include_usage_adds_a_final_usage_chunk(gateway: Stack) -> None:
    response = gateway.post(body("count", stream=True, stream_options={"include_usage": True}), stream=True)
    chunks = sse_data(sse_lines(response))[:-1]
    *content, usage_chunk = chunks
    assert all(c["usage"] is None for c in content)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0


def test_models_are_listed_and_fetched(gateway: Stack) -> None:
    import requests

    listing = requests.get(gateway.url + "/v1/models", timeout=5).json()
    assert listing["object"] == "list"
    expected = {"Creative", "Balanced", "Precise", "gpt-4"}
    if gateway.dialect == "copilot":
        expected |= {"copilot", "think-deeper", "gpt-5"}
        expected |= {"claude-copilot", "claude-copilot-think-deeper", "claude-copilot-gpt-5"}
    else:
        expected |= {f"claude-bing-{name.lower()}" for name in ("Creative", "Balanced", "Precise", "gpt-4")}
    assert {m["id"] for m in listing["data"]} == expected
    assert requests.get(gateway.url + "/models", timeout=5).json() == listing
    one = requests.get(gateway.url + "/v1/models/gpt-4", timeout=5)
    assert one.json()["id"] == "gpt-4"
    missing = requests.get(gateway.url + "/v1/models/llama-9", timeout=5)  # any gpt-* is aliased (#17)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_gpt4_model_selects_the_strongest_upstream_setting(gateway: Stack) -> None:
    response = gateway.post(body("which tone", model="gpt-4"))
    assert response.status_code == 200
    sent = gateway.last_request()
    if gateway.dialect == "bing":
        assert sent["tone"] == "Creative"
        assert "h3imaginative" in sent["optionsSets"]
        assert "gpt4tmncnp" in sent["optionsSets"]
    else:
        assert sent["mode"] == "smart"


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize(
    ("model", "mode"), [("copilot", "chat"), ("think-deeper", "reasoning"), ("gpt-5", "smart")]
)
def test_copilot_models_select_their_modes(gateway: Stack, model: str, mode: str) -> None:
    assert gateway.post(body("mode?", model=model)).status_code == 200
    assert gateway.last_request()["mode"] == mode


def test_cors_preflight_needs_no_auth(gateway: Stack) -> None:
    import requests

    # Keyed, as a gateway that browsers may call is (an open one allows no origin by default).
    with isolated_app(gateway, "cors", API_KEYS="k1", SECRET_KEY="contract-secret-0123456789") as (server, _):
        response = requests.options(
            server.url + "/v1/chat/completions",
            headers={
                "Origin": "https://chat.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
            },
            timeout=5,
        )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed and "x-stainless-os" in allowed


def test_invalid_request_is_a_400_naming_the_param(gateway: Stack) -> None:
    response = gateway.post({"model": "Balanced", "messages": [{"role": "wizard", "content": "hi"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].role"
    assert set(error) == {"message", "type", "param", "code"}
