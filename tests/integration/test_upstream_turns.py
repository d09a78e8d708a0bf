"""One request, bounded upstream turns (audit round 3, N3), on the real stack.

A request that would need more upstream turns than MAX_UPSTREAM_TURNS_PER_REQUEST is a
400 `context_length_exceeded` before anything goes upstream (the simulator's counters
do not move), the audit's 1 MB body too; an images prompt is bounded like a message; and
every turn a request does cause (its priming parts and the turn itself) is an entry of
the account's per-minute ledger, not just the first.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis import Redis

from service import priming
from tests.integration.conftest import Stack, body


def ledger(redis: Redis, since: float) -> int:
    """Entries made since `since` (epoch seconds) in every account's sliding-minute rate ledger.

    Counted by start time, not by size: a grant trims the entries of earlier tests that left
    the minute, so a difference of sizes can come out short."""
    return sum(int(redis.zcount(key, since, "+inf")) for key in redis.scan_iter("*:rate:*"))


def upstream_turns(gateway: Stack) -> int:
    return int(gateway.simulator.stats()["invocations"])


def tools(count: int, size: int) -> list[dict[str, Any]]:
    """`count` function tools whose parameter schemas take about `size` characters each (an enum)."""
    values = [f"choice-{n:05d}" for n in range(size // 15)]
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": f"tool {i}",
                "parameters": {"type": "object", "properties": {"x": {"type": "string", "enum": values}}},
            },
        }
        for i in range(count)
    ]


@pytest.mark.dialects("copilot", reason="Copilot's 10 KB turn is what priming splits for")
def test_a_request_over_the_turn_cap_is_refused_before_the_upstream(gateway: Stack) -> None:
    before = upstream_turns(gateway)
    system = {
        "role": "system",
        "content": "Follow the rules. " * 1700,
    }  # ~30 KB: the tool block cannot join it
    heavy = {
        "model": "copilot",
        "messages": [system, {"role": "user", "content": "hi"}],
        "tools": tools(9, 9_000),  # ~81 KB of instructions, under the 100 KB tool cap
    }
    response = gateway.post(heavy)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages"), error
    assert "MAX_UPSTREAM_TURNS_PER_REQUEST" in error["message"]
    # The audit's 1 MB body: a response format whose schema carries the bulk.
    schema = {"type": "object", "description": "x" * 1_000_000, "properties": {"a": {"type": "string"}}}
    huge = body(
        "hi",
        model="copilot",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert len(json.dumps(huge)) > 1_000_000
    response = gateway.post(huge)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format.json_schema.schema"
    assert upstream_turns(gateway) == before


@pytest.mark.dialects("copilot", reason="image generation is Copilot's")
def test_an_images_prompt_is_bounded_like_a_message(gateway: Stack) -> None:
    before = upstream_turns(gateway)
    response = gateway.post({"prompt": "a cat " * 40_000}, path="/v1/images/generations")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt"), error
    assert upstream_turns(gateway) == before


@pytest.mark.dialects("copilot", reason="only Copilot's page context has a limit below CONTEXT_MAX_CHARS")
def test_every_priming_turn_is_an_entry_of_the_accounts_minute(gateway: Stack) -> None:
    history: list[dict[str, str]] = []
    for i in range(13):
        history.append({"role": "user", "content": f"question {i} " + "q" * 990})
        history.append({"role": "assistant", "content": f"answer {i} " + "a" * 990})
    messages = [*history, {"role": "user", "content": "hi"}]
    turns, since = upstream_turns(gateway), time.time()
    response = gateway.post({"model": "copilot", "messages": messages})
    assert response.status_code == 200, response.text
    sent = upstream_turns(gateway) - turns
    pairs = [(m["role"], m["content"]) for m in history]
    assert sent == priming.upstream_turns("hi", pairs, "", budget=10_000, max_context=32_000) >= 3  # primed
    assert ledger(gateway.redis, since) == sent


@pytest.mark.dialects("copilot", reason="Copilot's 10 KB turn is what priming splits for")
def test_the_largest_admissible_request_sends_what_the_door_counted(gateway: Stack) -> None:
    """At the cap: 30 KB of system text and 72 KB of tool schemas are 10 priming parts and the
    last part that asks (the repair the door also reserves is not needed: the scripted model answers in text).
    The worker sends exactly the parts the door counted, and each is an entry of the ledger."""
    from service import turn_plan
    from service.tools.openai_params import parse_tools
    from service.tools.options import TurnOptions

    system = "Follow the rules. " * 1700
    heavy = {
        "model": "copilot",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
        "tools": tools(8, 9_000),
    }
    options = TurnOptions(tools=parse_tools(heavy["tools"]))
    counted = turn_plan.upstream_turns("hi", [], system, options, budget=10_000, max_context=32_000)
    assert counted == 12  # MAX_UPSTREAM_TURNS_PER_REQUEST's default: the largest request admitted
    turns, since = upstream_turns(gateway), time.time()
    started = time.monotonic()
    response = gateway.post(heavy, timeout=300)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    sent = upstream_turns(gateway) - turns
    assert sent == counted - turn_plan.repairs(options)
    assert ledger(gateway.redis, since) == sent
    print(f"\nlargest admissible request: {sent} upstream turns in {took:.1f} s")
