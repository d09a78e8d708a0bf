"""Emulated tool calling, structured output and the gateway's own cuts, end to end.

Real gunicorn, real workers, the simulator's scripted tool-using model
(`tests.simulator.tool_model`), real SDKs (openai, LangChain) in both dialects.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)
from pydantic import SecretStr

from tests.integration.conftest import Stack
from tests.support.sdk_types import narrow

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CLOCK: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def ask(client: OpenAI, messages: list[ChatCompletionMessageParam], **extra: Any) -> Any:
    return client.chat.completions.create(model="Balanced", messages=messages, **extra)


def test_call_result_answer_loop_on_one_upstream_conversation(client: OpenAI, gateway: Stack) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "[sim:tools=1] weather in Paris?"}
    ]
    first = ask(client, messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")
    messages += [
        # The assistant message exactly as the SDK returned it, not re-typed as a param.
        cast(ChatCompletionMessageParam, choice.message.model_dump(exclude_none=True)),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="Balanced", messages=messages, tools=[WEATHER]
    )
    final = raw.parse().choices[0]
    assert final.finish_reason == "stop" and final.message.tool_calls is None
    assert final.message.content is not None and "sunny, 21C" in final.message.content
    users = gateway.upstream_users(raw.headers["X-Conversation-Id"])
    assert len(users) == 2  # the tool round continued the same upstream conversation
    assert "[gateway:tools]" in users[0] and "[gateway:tools]" not in users[1]
    assert f'<tool_result id="{call.id}" name="get_weather">' in users[1]


def test_streamed_prose_then_parallel_calls(client: OpenAI) -> None:
    stream = ask(
        client,
        [{"role": "user", "content": "[sim:tools=1][sim:tool_prose][sim:tool_parallel] weather and time"}],
        tools=[WEATHER, CLOCK],
        stream=True,
    )
    text, finish = "", None
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"id": part.id, "name": "", "arguments": ""})
            entry["name"] += part.function.name or ""
            entry["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text.strip() == "Let me look that up for you."
    assert "<tool_call" not in text and "continue once" not in text
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"} and finish == "tool_calls"


@pytest.mark.parametrize("style", ["tool_malformed", "tool_invalid", "tool_fenced"])
def test_malformed_or_invalid_calls_are_repaired_once(client: OpenAI, gateway: Stack, style: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="Balanced",
        messages=[{"role": "user", "content": f"[sim:tools=1][sim:{style}] weather?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = narrow(choice.message.tool_calls[0], ChatCompletionMessageFunctionToolCall)
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    users = gateway.upstream_users(raw.headers["X-Conversation-Id"])
    repaired = style != "tool_fenced"
    assert len(users) == (2 if repaired else 1)
    if repaired:
        assert users[1].startswith("Your previous answer could not be used")


def test_required_call_that_never_comes_is_an_error(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as caught:
        ask(
            client,
            [{"role": "user", "content": "[sim:tools=1][sim:tool_silent] weather?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    assert caught.value.status_code == 502 and "tool_call_failed" in str(caught.value.body)


def test_auto_without_a_call_is_a_text_answer(client: OpenAI) -> None:
    choice = ask(client, [{"role": "user", "content": "[sim:tools=1][sim:tool_silent] hi"}], tools=[WEATHER])
    assert choice.choices[0].finish_reason == "stop"
    assert choice.choices[0].message.content == "I can answer that without any function."


def test_langchain_bind_tools_agent_over_two_rounds(gateway: Stack) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    model = ChatOpenAI(
        model="gpt-4o", base_url=gateway.url + "/v1", api_key=SecretStr("sk-x"), max_retries=0, timeout=60
    )
    bound = model.bind_tools([add])
    messages: list[Any] = [HumanMessage("[sim:tools=2] what is 2 + 3, plus 2 + 3?")]
    rounds = 0
    while True:
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        rounds += 1
        for call in reply.tool_calls:
            assert call["name"] == "add" and call["args"] == {"a": 2, "b": 3}
            messages.append(ToolMessage(str(add.invoke(call["args"])), tool_call_id=call["id"]))
        assert rounds <= 2
    assert rounds == 2
    assert "5" in reply.content and "tool_result" in reply.content  # the scripted model echoes the results


def test_langchain_structured_output_with_pydantic(gateway: Stack) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    model = ChatOpenAI(
        model="gpt-4o", base_url=gateway.url + "/v1", api_key=SecretStr("sk-x"), max_retries=0, timeout=60
    )
    # LangChain sends a json_schema response_format; the scripted model answers a sampled
    # value in a code fence after prose; the gateway extracts and validates it.
    result = model.with_structured_output(City).invoke("Oslo?")
    assert result == City(name="Paris", population=3)


def test_strict_schema_that_stays_invalid_is_an_error(client: OpenAI, gateway: Stack) -> None:
    import openai

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with pytest.raises(openai.APIStatusError) as caught:
        ask(
            client,
            [{"role": "user", "content": "[sim:json_bad] a number"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": schema, "strict": True},
            },
        )
    assert caught.value.status_code == 502 and "structured_output_invalid" in str(caught.value.body)


def test_stop_and_max_tokens_cut_the_answer(client: OpenAI) -> None:
    stopped = ask(client, [{"role": "user", "content": "[sim:long=40] count"}], stop=["w5 "])
    assert stopped.choices[0].message.content == "w1 w2 w3 w4 " and stopped.choices[0].finish_reason == "stop"
    cut = ask(client, [{"role": "user", "content": "[sim:long=40] count"}], max_tokens=4)
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "w1 w2"  # cl100k: "w", "1", " w", "2"
    stream = ask(client, [{"role": "user", "content": "[sim:long=40] count"}], max_tokens=4, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w1 w2"
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "extra, param",
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"tools": [{"type": "x"}]}, "tools[0].type")],
)
def test_unhonourable_parameters_are_400s_naming_them(
    gateway: Stack, extra: dict[str, Any], param: str
) -> None:
    response = gateway.post({"model": "Balanced", "messages": [{"role": "user", "content": "hi"}], **extra})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_sdk_parse_helper_and_streamed_json_object(client: OpenAI) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    parsed = client.chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "a city"}], response_format=City
    )
    assert parsed.choices[0].message.parsed == City(name="Paris", population=3)
    stream = ask(
        client,
        [{"role": "user", "content": "yes or no?"}],
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert json.loads(text) == {"answer": "yes"}  # the fence and the prose around it are gone
