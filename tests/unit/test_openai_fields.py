"""Every standard Chat Completions field: valid values accepted, mistyped ones a 400 naming the param.

The cases mirror OpenAI's documented request schema; the gateway cannot honour most of
these fields, yet a client that sends a valid value must not be refused, and one that
sends a wrong one must hear about it the way OpenAI would tell it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ApiError
from service.web.chat.parse import parse_chat_request
from service.web.pipeline.request import MAX_DEPTH, MAX_VALUES, Bounds

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def parse(body: Any, *, stream: bool = False, bounds: Bounds | None = None, upstream: str = "bing") -> Any:
    if isinstance(body, dict) and stream:
        body = {**body, "stream": True}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_chat_request(raw, {}, bounds=bounds, upstream=upstream)


def ok(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": [USER], **fields}


def before(message: dict[str, Any]) -> dict[str, Any]:
    return ok(messages=[message, USER])


VALID = [
    ok(stop="END"),
    ok(stop=["a", "b", "c", "d"]),
    ok(stop=None),
    ok(response_format={"type": "text"}),
    ok(response_format={"type": "json_object"}),
    ok(response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}),
    ok(tools=[TOOL], tool_choice="auto", parallel_tool_calls=False),
    ok(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    ok(tool_choice="none"),
    ok(tool_choice="required"),
    ok(logit_bias={"50256": -100, "11": 2.5}),
    ok(seed=42, logprobs=False, n=1, user="u", store=True),
    ok(max_tokens=5, max_completion_tokens=7),
    ok(metadata={"k" * 64: "v" * 512}),
    ok(modalities=["text"], reasoning_effort="low", service_tier="auto", verbosity="high"),
    ok(prediction={"type": "content", "content": "draft"}),
    ok(audio={"voice": "alloy", "format": "mp3"}),
    ok(web_search_options={"search_context_size": "low", "user_location": None}),
    ok(prompt_cache_key="k", safety_identifier="s"),
    ok(stream_options={"include_usage": True}),  # without stream: LobeChat sends it; ignored
    ok(stream=False, stream_options={}),
    before({"role": "user", "content": "x", "name": "alice"}),
    before(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ),
    before({"role": "tool", "content": "42", "tool_call_id": "c1"}),
    before({"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}),
    before({"role": "function", "name": "f", "content": None}),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("body", VALID)
def test_valid_values_are_accepted(body: dict[str, Any], stream: bool) -> None:
    # A tool result just before the user message joins its turn (service.tools.history.fold).
    assert parse(body, stream=stream).prompt.endswith("hi")


def test_stream_options_without_stream_are_ignored() -> None:
    chat = parse(ok(stream_options={"include_usage": True}))
    assert chat.stream is False and chat.include_usage is False


INVALID = [
    (ok(stop=5), "stop", "invalid_type"),
    (ok(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    (ok(stop=["a", 1]), "stop[1]", "invalid_type"),
    (ok(response_format="json"), "response_format", "invalid_type"),
    (ok(response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
    (ok(response_format={}), "response_format.type", "missing_required_parameter"),
    (
        ok(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
    ),
    (
        ok(response_format={"type": "json_schema", "json_schema": {"name": "a b"}}),
        "response_format.json_schema.name",
        "invalid_value",
    ),
    (
        ok(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": []}}),
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    (ok(tools={"type": "function"}), "tools", "invalid_type"),
    (ok(tools=[{"type": "function"}]), "tools[0].function", "missing_required_parameter"),
    (ok(tools=[{"type": "browser"}]), "tools[0].type", "invalid_value"),
    (
        ok(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        "missing_required_parameter",
    ),
    (
        ok(tools=[{"type": "function", "function": {"name": "x" * 65}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        ok(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (
        ok(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
        "tools[0].function.strict",
        "invalid_type",
    ),
    (ok(tool_choice="sometimes"), "tool_choice", "invalid_value"),
    (ok(tool_choice=1), "tool_choice", "invalid_type"),
    (ok(tool_choice={"type": "function"}), "tool_choice.function", "missing_required_parameter"),
    (
        ok(tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
    (ok(logit_bias=[1]), "logit_bias", "invalid_type"),
    (ok(logit_bias={"50256": 101}), "logit_bias.50256", "decimal_above_maximum_value"),
    (ok(logit_bias={"50256": "x"}), "logit_bias.50256", "invalid_type"),
    (ok(logit_bias={"hello": 1}), "logit_bias", "invalid_value"),
    (ok(seed=1.5), "seed", "invalid_type"),
    (ok(seed="1"), "seed", "invalid_type"),
    (ok(logprobs="yes"), "logprobs", "invalid_type"),
    (ok(logprobs=True), "logprobs", "invalid_value"),
    (ok(top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    (ok(top_logprobs=2), "top_logprobs", "invalid_value"),
    (ok(n=0), "n", "integer_below_min_value"),
    (ok(max_tokens="5"), "max_tokens", "invalid_type"),
    (ok(user=["u"]), "user", "invalid_type"),
    (ok(metadata={"k": 1}), "metadata.k", "invalid_type"),
    (ok(metadata={f"k{i}": "v" for i in range(17)}), "metadata", "object_above_max_properties"),
    (ok(metadata={"k" * 65: "v"}), "metadata", "string_above_max_length"),
    (ok(metadata={"k": "v" * 513}), "metadata.k", "string_above_max_length"),
    (ok(store="no"), "store", "invalid_type"),
    (ok(parallel_tool_calls=1), "parallel_tool_calls", "invalid_type"),
    (ok(modalities=["video"]), "modalities[0]", "invalid_value"),
    (ok(reasoning_effort="max"), "reasoning_effort", "invalid_value"),
    (ok(service_tier="gold"), "service_tier", "invalid_value"),
    (ok(verbosity=3), "verbosity", "invalid_type"),
    (ok(prediction={"type": "content"}), "prediction.content", "missing_required_parameter"),
    (ok(audio={"voice": "alloy"}), "audio.format", "missing_required_parameter"),
    (ok(stream_options={"include_usage": "yes"}), "stream_options.include_usage", "invalid_type"),
    (ok(stream_options=[]), "stream_options", "invalid_type"),
    (
        ok(web_search_options={"search_context_size": "huge"}),
        "web_search_options.search_context_size",
        "invalid_value",
    ),
    (ok(prompt_cache_key=1), "prompt_cache_key", "invalid_type"),
    (ok(safety_identifier={}), "safety_identifier", "invalid_type"),
    (before({"role": "user", "content": "x", "name": 5}), "messages[0].name", "invalid_type"),
    (before({"role": "tool", "content": "42"}), "messages[0].tool_call_id", "missing_required_parameter"),
    (before({"role": "function", "content": "42"}), "messages[0].name", "missing_required_parameter"),
    (before({"role": "assistant", "tool_calls": {}}), "messages[0].tool_calls", "invalid_type"),
    (
        before({"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}),
        "messages[0].tool_calls[0].function",
        "missing_required_parameter",
    ),
    (
        before(
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}
        ),
        "messages[0].tool_calls[0].function.arguments",
        "missing_required_parameter",
    ),
    (
        before({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        before({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
    ),
    (
        before(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "ogg"}}],
            }
        ),
        "messages[0].content[0].input_audio.format",
        "invalid_value",
    ),
    (
        ok(
            messages=[
                USER,
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": [{"type": "video"}]},
            ]
        ),
        "messages[2].content[0].type",
        "invalid_value",
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("body", "param", "code"), INVALID)
def test_mistyped_fields_name_their_param(body: dict[str, Any], param: str, code: str, stream: bool) -> None:
    with pytest.raises(ApiError) as info:
        parse(body, stream=stream)
    error = info.value
    assert (error.status, error.param, error.code) == (400, param, code), error.message
    assert error.error_type == "invalid_request_error"
    assert param in error.message or error.code in ("invalid_value", "missing_required_parameter")


def test_messages_read_like_openai() -> None:
    with pytest.raises(ApiError) as info:
        parse(ok(stop=["a", "b", "c", "d", "e"]))
    assert info.value.message == (
        "Invalid 'stop': array too long. Expected an array with maximum length 4, "
        "but got an array with length 5 instead."
    )
    with pytest.raises(ApiError) as info:
        parse(ok(stop=5))
    assert info.value.message == (
        "Invalid type for 'stop': expected one of a string or array of strings, but got integer instead."
    )
    with pytest.raises(ApiError) as info:
        parse(ok(tool_choice="sometimes"))
    assert (
        info.value.message
        == "Invalid value: \"sometimes\". Supported values are: 'none', 'auto', and 'required'."
    )


# -- bounds ---------------------------------------------------------------------------


def nested(depth: int, *, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "array" else ('{"a":' * depth + "1" + "}" * depth)


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 20_000])
def test_deep_nesting_is_a_400_never_a_crash(kind: str, depth: int) -> None:
    raw = (
        '{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "x": '
        + nested(depth, kind=kind)
        + "}"
    )
    with pytest.raises(ApiError) as info:
        parse(raw.encode())
    assert (info.value.status, info.value.param) == (400, None)
    assert "nests" in info.value.message


def test_deep_nesting_inside_a_message_is_a_400() -> None:
    raw = (
        '{"model": "gpt-4", "messages": [{"role": "user", "content": ' + nested(20_000, kind="array") + "}]}"
    )
    with pytest.raises(ApiError) as info:
        parse(raw.encode())
    assert info.value.status == 400


def test_nesting_within_the_limit_is_fine() -> None:
    body = ok(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {}}})
    # Inside a schema's data (`default`), where the schema's own depth bound does not look.
    schema: dict[str, Any] = body["response_format"]["json_schema"]["schema"]
    schema["default"] = {}
    schema = schema["default"]
    for _ in range(MAX_DEPTH - 7):
        schema["a"] = {}
        schema = schema["a"]
    assert parse(body).prompt == "hi"


def test_message_count_is_bounded() -> None:
    body = ok(messages=[USER] * 11)
    with pytest.raises(ApiError) as info:
        parse(body, bounds=Bounds(max_messages=10))
    assert (info.value.status, info.value.param, info.value.code) == (
        400,
        "messages",
        "array_above_max_length",
    )
    assert parse(ok(messages=[USER] * 10), bounds=Bounds(max_messages=10)).prompt == "hi"


def test_total_characters_are_bounded() -> None:
    body = ok(messages=[{"role": "system", "content": "s" * 60}, {"role": "user", "content": "u" * 41}])
    with pytest.raises(ApiError) as info:
        parse(body, bounds=Bounds(max_input_chars=100))
    assert (info.value.status, info.value.param, info.value.code) == (
        400,
        "messages",
        "context_length_exceeded",
    )
    assert parse(ok(messages=[{"role": "user", "content": "u" * 100}]), bounds=Bounds(max_input_chars=100))


def test_a_prompt_over_copilots_limit_is_context_length_exceeded() -> None:
    long = ok(model="copilot", messages=[{"role": "user", "content": "x" * 10_241}])
    with pytest.raises(ApiError) as info:
        parse(long, upstream="copilot")
    error = info.value
    assert (error.status, error.error_type, error.param, error.code) == (
        400,
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )
    assert "10240" in error.message
    assert parse(
        ok(model="copilot", messages=[{"role": "user", "content": "x" * 10_240}]), upstream="copilot"
    )
    # ChatHub documents no such limit: only MAX_INPUT_CHARS applies.
    assert parse(ok(messages=[{"role": "user", "content": "x" * 10_241}]), upstream="bing")


def test_the_number_of_json_values_is_bounded() -> None:
    # Validation costs per value: a body of countless tiny values is refused before the schema runs.
    with pytest.raises(ApiError) as info:
        parse(ok(logit_bias={str(i): 1 for i in range(MAX_VALUES)}))
    assert (info.value.status, info.value.param) == (400, "logit_bias")
    with pytest.raises(ApiError) as info:
        parse(ok(stop=[1] * (MAX_VALUES + 1)))
    assert (info.value.status, info.value.param) == (400, "stop")
    long_chat = [{"role": "user", "content": [{"type": "text", "text": "a"}]}] * 2047 + [USER]
    assert parse(ok(messages=long_chat)).prompt == "hi"


def test_the_first_bad_message_is_named() -> None:
    bad = {"role": "user", "content": [{"type": "text"}]}
    with pytest.raises(ApiError) as info:
        parse(ok(messages=[USER, bad, bad, bad, USER]))
    assert info.value.param == "messages[1].content[0].text"
