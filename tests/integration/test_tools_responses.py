"""Emulated tools and structured output on the Responses API: openai-python and the Agents SDK."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from openai import OpenAI
from openai.types.responses import FunctionToolParam, ResponseCompletedEvent
from pydantic import BaseModel

from tests.integration.conftest import Stack
from tests.integration.test_agents_sdk import agents_python
from tests.support.sdk_types import function_call, narrow, stored
from tests.support.stack import ROOT

# `strict` is required by the SDK's TypedDict but optional on the wire: the test sends none.
WEATHER = cast(
    FunctionToolParam,
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
)


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def test_function_call_then_output_by_previous_response_id(client: OpenAI, gateway: Stack) -> None:
    first = client.responses.create(model="gpt-4o", input="[sim:tools=1] weather in Paris?", tools=[WEATHER])
    (item,) = first.output
    call = function_call(item)
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.status == "completed"
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "cloudy, 12C"}],
        tools=[WEATHER],
    )
    assert "cloudy, 12C" in second.output_text
    conversation_id = stored(gateway.redis.get(f"completion:{second.id}"))
    users = gateway.upstream_users(conversation_id)
    # The result names the function, though only the stored first response holds the call (#17).
    assert len(users) == 2 and f'<tool_result id="{call.call_id}" name="get_weather">' in users[1]


def test_streamed_prose_and_function_call_events(client: OpenAI) -> None:
    events = list(
        client.responses.create(
            model="gpt-4o",
            input="[sim:tools=1][sim:tool_prose] weather?",
            tools=[WEATHER],
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Let me look that up for you."
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    assert "response.function_call_arguments.done" in kinds
    final = narrow(events[-1], ResponseCompletedEvent).response
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == [0, 1]


def test_structured_output_with_parse(client: OpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    parsed = client.responses.parse(model="gpt-4o", input="a city", text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=3)


def test_max_output_tokens_makes_an_incomplete_response(client: OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="[sim:long=80] count", max_output_tokens=16)
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.output_text.startswith("w1 w2") and "w40" not in response.output_text


def test_agents_sdk_runs_a_function_tool(gateway: Stack) -> None:
    agents: Path = agents_python()
    done = subprocess.run(
        [
            str(agents),
            str(ROOT / "tests" / "clients" / "agents_tool_run.py"),
            gateway.url + "/v1",
            "[sim:tools=1] weather?",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] == ["Paris"]
    assert "sunny in Paris" in result["output"]
