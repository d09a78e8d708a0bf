"""Run an OpenAI Agents SDK agent against the gateway: `python agents_run.py BASE_URL MODEL PROMPT…`.

Runs in the Agents SDK's own virtualenv (see tests/integration/test_agents_sdk.py), one
`Runner.run` per prompt, each continuing the last with `previous_response_id`, and
prints one JSON line per turn: the final output and the response id.
"""

from __future__ import annotations

import asyncio
import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI


async def main(base_url: str, model: str, prompts: list[str]) -> None:
    set_tracing_disabled(True)  # tracing would post to api.openai.com
    client = AsyncOpenAI(base_url=base_url, api_key="sk-agents", max_retries=0, timeout=30)
    agent = Agent(
        name="gateway-agent",
        instructions="You answer briefly.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
    )
    previous = None
    for prompt in prompts:
        result = await Runner.run(agent, prompt, previous_response_id=previous)
        previous = result.last_response_id
        print(json.dumps({"output": result.final_output, "response_id": previous}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
