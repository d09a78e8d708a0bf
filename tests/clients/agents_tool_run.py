"""An Agents SDK agent with one function tool: `python agents_tool_run.py BASE_URL PROMPT`.

Runs in the Agents SDK's own virtualenv (tests/integration/test_agents_sdk.py builds it);
prints one JSON line: the final output, the tool's calls and the last response id.
"""

from __future__ import annotations

import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    CALLS.append(city)
    return f"sunny in {city}"


async def main(base_url: str, prompt: str) -> None:
    set_tracing_disabled(True)  # tracing would post to api.openai.com
    client = AsyncOpenAI(base_url=base_url, api_key="sk-agents", max_retries=0, timeout=30)
    agent = Agent(
        name="weather-agent",
        instructions="You answer briefly.",
        model=OpenAIResponsesModel(model="gpt-4o", openai_client=client),
        tools=[get_weather],
    )
    result = await Runner.run(agent, prompt, max_turns=4)
    print(json.dumps({"output": result.final_output, "calls": CALLS, "response_id": result.last_response_id}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
