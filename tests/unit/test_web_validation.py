"""Request validation: OpenAI's rules, and errors that name the param as OpenAI does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ApiError, InvalidRequest, NotFound
from service.models import find_model
from service.runtime.settings import SettingsError, load_settings
from service.web.chat.parse import parse_chat_request
from service.web.pipeline.request import PARSE_ERROR

USER = {"role": "user", "content": "hi"}


def parse(body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_chat_request(raw, headers or {})


def ok(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": [USER], **fields}


def test_minimal_request() -> None:
    chat = parse(ok())
    assert chat.model == "gpt-4"
    assert chat.prompt == "hi"
    assert chat.system == ""
    assert chat.history == ()
    assert chat.stream is False and chat.include_usage is False
    assert chat.conversation_id is None and chat.conversation_param is None


def test_model_names_match_case_insensitively_and_are_canonical() -> None:
    assert parse(ok(model="creative")).model == "Creative"


RESULT = '[gateway:tool_results]\n<tool_result id="x" name="">\n42\n</tool_result>'


def test_system_history_and_prompt_are_derived_from_messages() -> None:
    chat = parse(
        ok(
            messages=[
                {"role": "system", "content": "  Be brief.  "},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "x"},
                {"role": "developer", "content": "Use English."},
                {"role": "assistant", "content": "Answer."},
                {"role": "user", "content": "  next  "},
            ],
            seed=1,
        )
    )
    assert chat.system == "Be brief.\n\nUse English."
    assert chat.prompt == "next"
    assert chat.history == (
        {"role": "user", "content": "a\nb"},
        {
            "role": "user",
            "content": '[gateway:tool_results]\n<tool_result id="x" name="">\n42\n</tool_result>',
        },
        {"role": "assistant", "content": "Answer."},
    )
    assert len(chat.messages) == 7


def test_stream_options_and_sampling_knobs_are_accepted() -> None:
    chat = parse(
        ok(
            stream=True,
            stream_options={"include_usage": True},
            n=1,
            temperature=2,
            top_p=0.5,
            presence_penalty=-2,
            frequency_penalty=1.5,
            max_tokens=10,
            max_completion_tokens=5,
            user="u1",
        )
    )
    assert chat.stream is True and chat.include_usage is True


def test_null_stream_options_are_fine_without_stream() -> None:
    assert parse(ok(stream_options=None)).include_usage is False


@pytest.mark.parametrize(
    ("fields", "headers", "expected"),
    [
        (
            {"conversation_id": "conv_a", "id": "conv_b"},
            {"X-Conversation-Id": "conv_c"},
            ("conv_a", "conversation_id"),
        ),
        ({"id": "chatcmpl-b"}, {"X-Conversation-Id": "conv_c"}, ("chatcmpl-b", "id")),
        ({}, {"X-Conversation-Id": "conv_c"}, ("conv_c", "X-Conversation-Id")),
        ({"conversation_id": "  "}, {}, (None, None)),
    ],
)
def test_conversation_id_sources(
    fields: dict[str, Any], headers: dict[str, str], expected: tuple[Any, Any]
) -> None:
    chat = parse(ok(**fields), headers)
    assert (chat.conversation_id, chat.conversation_param) == expected


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"a": NaN}', b""])
def test_unparseable_bodies(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(raw)
    assert info.value.message == PARSE_ERROR
    assert info.value.param is None
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_a_404() -> None:
    with pytest.raises(NotFound) as info:
        parse(ok(model="dall-e-3"))
    error = info.value
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    assert error.message.startswith("The model `dall-e-3` does not exist or you do not have access to it. ")
    assert "/v1/models" in error.message and "MODEL_ALIASES" in error.message


def _user_then(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [message, USER]


# Every validation error, with the param it must name; also replayed over HTTP in test_web_app.
AUDIO = {"data": "", "format": "wav"}
ERROR_CASES: list[tuple[dict[str, Any], str]] = [
    ({"messages": [USER]}, "model"),
    ({"model": 4, "messages": [USER]}, "model"),
    ({"model": "gpt-4"}, "messages"),
    (ok(messages=[]), "messages"),
    (ok(messages="hi"), "messages"),
    (ok(messages=["hi"]), "messages[0]"),
    (ok(messages=_user_then({"content": "x"})), "messages[0].role"),
    (ok(messages=_user_then({"role": "bot", "content": "x"})), "messages[0].role"),
    (ok(messages=_user_then({"role": "user"})), "messages[0].content"),
    (ok(messages=_user_then({"role": "system", "content": None})), "messages[0].content"),
    (ok(messages=_user_then({"role": "user", "content": 5})), "messages[0].content"),
    (ok(messages=_user_then({"role": "user", "content": ["x"]})), "messages[0].content[0]"),
    (
        ok(messages=_user_then({"role": "user", "content": [{"text": "x"}]})),
        "messages[0].content[0].type",
    ),
    (
        ok(
            messages=_user_then(
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}
            )
        ),
        "messages[0].content[1].text",
    ),
    (
        ok(messages=_user_then({"role": "user", "content": [{"type": "input_audio", "input_audio": AUDIO}]})),
        "messages[0].content[0].type",
    ),
    (ok(messages=[USER, {"role": "assistant", "content": "a"}]), "messages"),
    (
        ok(messages=[USER, {"role": "assistant", "content": "a"}, {"role": "user", "content": " "}]),
        "messages[2].content",
    ),
    (ok(messages=[{"role": "user", "content": [{"type": "text", "text": "  "}]}]), "messages[0].content"),
    (ok(stream="true"), "stream"),
    (ok(stream=True, stream_options="yes"), "stream_options"),
    (ok(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (ok(n=2), "n"),
    (ok(n="1"), "n"),
    (ok(temperature=2.5), "temperature"),
    (ok(temperature="hot"), "temperature"),
    (ok(temperature=True), "temperature"),
    (ok(top_p=-0.1), "top_p"),
    (ok(presence_penalty=3), "presence_penalty"),
    (ok(frequency_penalty=-2.1), "frequency_penalty"),
    (ok(max_tokens=0), "max_tokens"),
    (ok(max_tokens=1.5), "max_tokens"),
    (ok(max_completion_tokens=-1), "max_completion_tokens"),
    (ok(user=5), "user"),
    (ok(conversation_id=5), "conversation_id"),
    (ok(id=["x"]), "id"),
]


@pytest.mark.parametrize(("body", "param"), ERROR_CASES)
def test_every_error_names_its_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(body)
    error = info.value
    assert error.status == 400, error.message
    assert error.param == param, error.message
    assert error.error_type == "invalid_request_error"


def test_error_messages_read_like_openai() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(ok(messages=_user_then({"role": "bot", "content": "x"})))
    assert info.value.message == (
        "Invalid value: \"bot\". Supported values are: 'system', 'developer', 'user', 'assistant', "
        "'tool', and 'function'."
    )
    with pytest.raises(InvalidRequest) as info:
        parse(ok(temperature=3))
    assert info.value.message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead."
    )
    assert info.value.code == "decimal_above_maximum_value"
    with pytest.raises(InvalidRequest) as info:
        parse({"model": "gpt-4"})
    assert info.value.message == "Missing required parameter: 'messages'."
    with pytest.raises(InvalidRequest) as info:
        parse(
            ok(
                messages=_user_then(
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": AUDIO}]}
                )
            )
        )
    assert "only 'text' and 'image_url'" in info.value.message and "input_audio" in info.value.message


def test_assistant_content_may_be_null_or_absent() -> None:
    chat = parse(ok(messages=[{"role": "assistant"}, {"role": "assistant", "content": None}, USER]))
    assert chat.history == ()


def test_client_default_model_names_go_through_aliases() -> None:
    """Clients' own defaults work out of the box; MODEL_ALIASES entries win over the defaults."""
    assert getattr(find_model("claude-opus-4-8", "copilot"), "id", None) == "copilot"
    assert getattr(find_model("gpt-3.5-turbo", "bing"), "id", None) == "Balanced"
    assert getattr(find_model("o3", "copilot"), "id", None) == "think-deeper"
    assert getattr(find_model("gpt-5.3-codex", "copilot"), "id", None) == "gpt-5"
    assert (
        getattr(find_model("CLAUDE-3-haiku", "copilot", (("claude-*", "think-deeper"),)), "id", None)
        == "think-deeper"
    )
    assert find_model("dall-e-3", "copilot") is None
    assert parse(ok(model="gpt-4o-mini")).model == "Balanced"


def test_model_aliases_setting_is_strict() -> None:
    settings = load_settings({"MODEL_ALIASES": "claude-*=think-deeper, o3=copilot", "UPSTREAM": "copilot"})
    assert settings.model_aliases == (("claude-*", "think-deeper"), ("o3", "copilot"))
    with pytest.raises(SettingsError, match="MODEL_ALIASES"):
        load_settings({"MODEL_ALIASES": "claude-*", "UPSTREAM": "copilot"})
    with pytest.raises(SettingsError, match="does not have"):
        load_settings({"MODEL_ALIASES": "claude-*=think-deeper", "UPSTREAM": "bing"})
