"""The same emulated tools and cuts on the other surfaces: Anthropic Messages and Responses."""

from __future__ import annotations

from typing import Any, cast

import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam, ToolUseBlock

from tests.integration.conftest import Stack
from tests.support.sdk_types import narrow, text_block

WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture()
def claude(gateway: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="sk-anything", max_retries=0, timeout=60)


def test_anthropic_tool_loop_on_one_upstream_conversation(
    claude: anthropic.Anthropic, gateway: Stack
) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "[sim:tools=1][sim:tool_prose] weather?"}]
    first = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=messages, tools=[WEATHER_TOOL]
    )
    assert first.stop_reason == "tool_use"
    text_item, call_item = first.content
    text, call = text_block(text_item), narrow(call_item, ToolUseBlock)
    assert text.type == "text" and text.text == "Let me look that up for you."
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [
        # The blocks exactly as the SDK returned them (model_dump), not re-typed as params.
        {"role": "assistant", "content": [cast(Any, block.model_dump()) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rain, 9C"}]},
    ]
    raw = claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=messages, tools=[WEATHER_TOOL]
    )
    final = raw.parse()
    assert final.stop_reason == "end_turn" and "rain, 9C" in text_block(final.content[0]).text
    users = gateway.upstream_users(raw.headers["X-Conversation-Id"])
    assert len(users) == 2 and f'<tool_result id="{call.id}" name="get_weather">' in users[1]


def test_anthropic_streamed_parallel_tool_use(claude: anthropic.Anthropic) -> None:
    clock: ToolParam = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    with claude.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": "[sim:tools=1][sim:tool_parallel] weather and time"}],
        tools=[WEATHER_TOOL, clock],
        tool_choice={"type": "any"},
    ) as stream:
        starts = [event.content_block.type for event in stream if event.type == "content_block_start"]
        final = stream.get_final_message()
    # Only the calls: no empty text block ahead of them, as the non-stream answer has none (#17).
    assert starts == ["tool_use", "tool_use"]
    assert [block.type for block in final.content] == ["tool_use", "tool_use"]
    calls = [block for block in final.content if block.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert final.stop_reason == "tool_use"


def test_anthropic_stop_sequences_and_max_tokens(claude: anthropic.Anthropic) -> None:
    stopped = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": "[sim:long=30] count"}],
        stop_sequences=["w4"],
    )
    assert text_block(stopped.content[0]).text == "w1 w2 w3 "
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "w4"
    cut = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=4, messages=[{"role": "user", "content": "[sim:long=30] count"}]
    )
    assert text_block(cut.content[0]).text == "w1 w2" and cut.stop_reason == "max_tokens"
