"""Upstream turns per request (audit round 3, N3): one plan for both tiers, a cap, and every turn
counted against the key's minute and the account's ledger."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from service import priming, turn_plan
from service.access import key_usage, ratelimit
from service.access.key_limits import Limits
from service.access.ratelimit import Caller
from service.errors import ApiError, InvalidRequest
from service.events import Done, Failed
from service.runtime.settings import Settings
from service.tools.options import OutputFormat, Tool, TurnOptions
from service.web.pipeline import quota
from service.web.pipeline.answer import Answer
from workers import turn_budget
from workers.tooling import Shaping

BUDGET, CONTEXT = 10_000, 32_000


def worker_turns(prompt: str, history: list[tuple[str, str]], system: str, options: TurnOptions) -> int:
    """What the worker sends for a new upstream conversation, counted the way it sends it."""
    shaping = Shaping(options, handle=None)
    text, system = shaping.prepare(prompt, system, fresh=True, budget=BUDGET, max_context=CONTEXT)
    primed = priming.plan(text, history, system, budget=BUDGET, max_context=CONTEXT)
    return len(primed.primers) + 1 + turn_plan.repairs(options)


TOOLS = tuple(Tool(name=f"t{i}", parameters={"enum": [f"v{n:05d}" for n in range(600)]}) for i in range(6))


@pytest.mark.parametrize(
    ("prompt", "history", "system", "options"),
    [
        ("hi", [], "", TurnOptions()),
        ("hi", [("user", "q" * 9_000), ("assistant", "a" * 9_000)], "be brief", TurnOptions()),
        ("x" * 10_000, [], "s" * 31_000, TurnOptions()),
        ("hi", [], "s" * 20_000, TurnOptions(tools=TOOLS)),
        ("hi", [], "s" * 31_000, TurnOptions(tools=TOOLS)),
        ("hi", [], "", TurnOptions(output=OutputFormat("json_schema", schema={"description": "d" * 30_000}))),
    ],
)
def test_the_door_counts_the_turns_the_worker_sends(
    prompt: str, history: list[tuple[str, str]], system: str, options: TurnOptions
) -> None:
    door = turn_plan.upstream_turns(prompt, history, system, options, budget=BUDGET, max_context=CONTEXT)
    assert door == worker_turns(prompt, history, system, options)


def test_the_worker_refuses_a_plan_over_the_cap_before_sending() -> None:
    turn_budget.check(10, TurnOptions(tools=TOOLS), 12)
    with pytest.raises(InvalidRequest) as caught:
        turn_budget.check(11, TurnOptions(tools=TOOLS), 12)
    assert caught.value.code == "context_length_exceeded" and caught.value.status == 400
    assert Settings().max_upstream_turns_per_request == 12


def test_a_request_takes_one_entry_of_the_keys_minute_per_turn(redis_client: Redis) -> None:
    caller = Caller(id="key_turns", owner="key_turns", limits=Limits(rpm=10))
    first = ratelimit.admit(redis_client, caller, lease_seconds=60, turns=3)
    assert first.error(caller) is None and first.requests_used == 3
    second = ratelimit.admit(redis_client, caller, lease_seconds=60, turns=7)
    assert second.error(caller) is None and second.requests_used == 10
    third = ratelimit.admit(redis_client, caller, lease_seconds=60)
    assert third.status == ratelimit.RPM


QUESTION = [{"role": "user", "content": "what is the capital of France?"}]


def usage(redis: Redis, caller: Caller) -> dict[str, Any]:
    return key_usage.usage(redis, caller.id, days=1)[-1]


def test_a_failed_turn_that_reached_the_upstream_is_charged_its_input(redis_client: Redis) -> None:
    caller = Caller(id="key_charged", owner="key_charged", limits=Limits(tokens_per_day=10_000))
    for terminal in (Failed({"message": "x"}, upstream_turns=3), Failed({"message": "x"})):
        decision = ratelimit.admit(redis_client, caller, lease_seconds=60)
        quota.Ticket(caller, decision.lease).settle(redis_client, terminal, Answer(QUESTION))
    day = usage(redis_client, caller)
    assert day["input_tokens"] > 0 and day["output_tokens"] == 0 and day["errors"] == 2
    charged = day["input_tokens"]
    decision = ratelimit.admit(redis_client, caller, lease_seconds=60)
    quota.Ticket(caller, decision.lease).settle(redis_client, Done("Paris"), Answer(QUESTION))
    assert usage(redis_client, caller)["input_tokens"] == 2 * charged  # the same input as a success


def test_the_door_charges_the_keys_minute_for_every_certain_turn(redis_url: str) -> None:
    """26 KB of history is two priming parts and the last part that asks: three entries of the key's
    minute (`priming.upstream_turns`)."""
    from service.web import create_app

    admin = {"Authorization": "Bearer turn-budget-admin-key-0123456789ab"}
    app = create_app(
        {
            "REDIS_URL": redis_url,
            "UPSTREAM": "copilot",
            "ADMIN_KEY": admin["Authorization"][7:],
            "SECRET_KEY": "t" * 40,
            "LOG_LEVEL": "ERROR",
        }
    )
    client = app.test_client()
    key = client.post("/admin/keys", json={"label": "turns", "rpm": 10}, headers=admin).get_json()["key"]
    history: list[dict[str, str]] = []
    for i in range(13):
        history += [
            {"role": "user", "content": f"q{i} " + "q" * 1000},
            {"role": "assistant", "content": "a" * 1000},
        ]
    body = {
        "model": "copilot",
        "messages": [*history, {"role": "user", "content": "hi"}],
        "conversation_id": "conv_missing",  # admitted, then a quick 404 instead of a turn
    }
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404, response.get_data(as_text=True)
    pairs = [(m["role"], m["content"]) for m in history]
    turns = priming.upstream_turns("hi", pairs, "", budget=10_000, max_context=32_000)
    assert turns == 3
    assert response.headers["x-ratelimit-remaining-requests"] == str(10 - turns)
    plain = {
        "model": "copilot",
        "messages": [{"role": "user", "content": "hi"}],
        "conversation_id": "conv_missing",
    }
    response = client.post("/v1/chat/completions", json=plain, headers={"Authorization": f"Bearer {key}"})
    assert response.headers["x-ratelimit-remaining-requests"] == str(10 - turns - 1)


def test_a_request_never_passes_the_cap_across_failovers() -> None:
    """Every turn goes through a counter that spans the request's attempts; once the request
    spent the cap (priming again on another account after a failure), the next turn is refused."""
    ledger: list[int] = []
    counter = turn_budget.TurnCounter(5, lambda: ledger.append(1))
    sent = 0
    for _attempt in range(2):  # a failover: a new client, the same request
        for _part in range(3):
            if counter.sent == 5:
                with pytest.raises(ApiError, match="MAX_UPSTREAM_TURNS_PER_REQUEST") as caught:
                    counter.note()
                assert caught.value.code == "upstream_turns_exhausted" and caught.value.status == 503
                continue
            counter.note()
            sent += 1
    assert sent == 5 and counter.sent == 5 and len(ledger) == 5
