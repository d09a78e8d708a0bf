"""The agents benchmark's task through the OpenAI Agents SDK: `python agents_task.py BASE_URL MODEL TASK`.

Runs in the Agents SDK's own virtualenv (see tests/integration/test_agents_sdk.py): one
`Runner.run` whose model calls chain with `previous_response_id` (the Responses API's
stateful mode), a function tool the scripted upstream calls at each step, and one JSON
line at the end: the final output and how many times the tool ran.
"""

from __future__ import annotations

import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

calls: list[str] = []


@function_tool
def read_note(name: str) -> str:
    """Read one of the project's notes by name."""
    calls.append(name)
    return f"note {len(calls)}: {name} is fine."


async def main(base_url: str, model: str, task: str) -> None:
    set_tracing_disabled(True)  # tracing would post to api.openai.com
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench-agents", max_retries=0, timeout=120)
    agent = Agent(
        name="bench-agent",
        instructions="You are a careful assistant. Use the tools to read what you need.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
        tools=[read_note],
    )
    result = await Runner.run(agent, task, max_turns=20, auto_previous_response_id=True)
    print(json.dumps({"output": result.final_output, "tool_calls": len(calls)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
