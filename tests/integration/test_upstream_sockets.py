"""Upstream round trips before the first token on a warm Copilot account: none beyond the `send` (#20).

A real gunicorn web process and one real worker, with the defaults this round sets for
Copilot: the account's socket kept between turns (`workers.upstream.socket_park`) and a
spare conversation created ahead of need (`workers.spare_conversations`). After warm-up
turns, a new conversation's turn and a continued one's each reach their first token with no
REST call and no websocket upgrade (the simulator's counters, read at the first token), and
the worker's trace shows the parked socket and the spare in use.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime import trace
from service.runtime.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from tests.support.stack import gateway_env, served, wait_for

PAUSE = 0.4  # between turns: the spare's refill (after the turn's stream) lands meanwhile


@pytest.fixture(scope="module")
def warm_stack(simulator: SimulatorProcess) -> Iterator[tuple[str, Redis]]:
    with EmbeddedRedis() as server:
        env = gateway_env(
            server.url,
            simulator.http_url,
            UPSTREAM="copilot",
            TRACE_REQUESTS="1",
            UPSTREAM_SPARE_CONVERSATIONS="on",
        )
        with served(env) as stack:
            yield stack


def round_trips(sim: SimulatorProcess) -> int:
    stats = sim.stats()
    return int(stats["rest_calls"]) + int(stats["copilot"]["sockets"])


def streamed(
    url: str, sim: SimulatorProcess, prompt: str, conversation: str = ""
) -> tuple[int, str, str, str]:
    """(upstream round trips before the first content, completion id, conversation id, text)."""
    message = {"role": "user", "content": prompt}
    body: dict[str, Any] = {"model": "Balanced", "messages": [message], "stream": True}
    if conversation:
        body["conversation_id"] = conversation
    before, trips, text, completion = round_trips(sim), -1, "", ""
    with requests.post(
        f"{url}/v1/chat/completions", json=body, headers={trace.HEADER: "1"}, stream=True, timeout=30
    ) as response:
        assert response.status_code == 200, response.text
        conversation = response.headers["X-Conversation-Id"]
        for line in response.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            completion = chunk["id"]
            delta = "".join((c.get("delta") or {}).get("content") or "" for c in chunk["choices"])
            if delta and trips < 0:
                trips = round_trips(sim) - before
            text += delta
    return trips, completion, conversation, text


def phases(redis: Redis, completion_id: str) -> list[str]:
    sides = wait_for(lambda: (lambda s: s if "worker" in s else None)(trace.load(redis, completion_id)))
    return [name for name, _when, _trips in sides["worker"]["marks"]]


def test_a_warm_account_reaches_the_first_token_with_no_upstream_round_trip(
    warm_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    url, redis = warm_stack
    cold, _, conversation, _ = streamed(url, sim, "warm up")
    assert cold == 2  # the first turn: a conversation create and a websocket upgrade
    time.sleep(PAUSE)

    trips, completion, _, text = streamed(url, sim, "a new conversation")
    assert text == "Hello! You said: a new conversation. This is turn 1."
    assert trips == 0
    marks = phases(redis, completion)
    assert {"spare_used", "ws_reused"} <= set(marks) and not {"upstream_created", "ws_open"} & set(marks)
    time.sleep(PAUSE)

    trips, completion, _, text = streamed(url, sim, "and again", conversation)
    assert text == "Hello! You said: and again. This is turn 2."
    assert trips == 0
    assert "ws_reused" in phases(redis, completion)
    stats = sim.stats()
    assert (stats["copilot"]["sockets"], stats["copilot"]["invocations"]) == (1, 3)
    assert stats["violations"] == []


def test_concurrent_turns_on_one_account_leave_one_idle_socket(
    warm_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    url, redis = warm_stack
    for key in redis.scan_iter("*:spare:*"):  # the reset simulator forgot the spare made for the last test
        redis.delete(key)
    streamed(url, sim, "warm up")  # one socket parked
    before = sim.stats()["copilot"]
    texts: list[str] = []

    def slow(n: int) -> None:
        texts.append(streamed(url, sim, f"[sim:slow=0.05][sim:long=20] turn {n}")[3])

    threads = [threading.Thread(target=slow, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(texts) == [" ".join(f"w{i}" for i in range(1, 21))] * 3
    stats = sim.stats()["copilot"]
    # One turn took the parked socket, the two others opened their own; each sent once.
    assert (stats["sockets"] - before["sockets"], stats["invocations"] - before["invocations"]) == (2, 3)
    assert wait_for(lambda: sim.stats()["copilot"]["open_sockets"] == 1)  # one parked, the others closed
    assert sim.stats()["copilot"]["idle_sockets"] == 1
    assert sim.stats()["violations"] == []
