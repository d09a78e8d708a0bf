"""Redis round trips to the first token (`test_round_trips`) for the common requests that are not a
plain new conversation: a conversation continued by its id, by a completion's id, by the client's
whole history or by a Responses `previous_response_id`, a new one with an Idempotency-Key (and
its retry, which attaches to the first run), and a turn with an image. Counted per side from
the turn's trace, asserted exactly (a case that takes more than one says why).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime import trace
from tests.integration.test_images import screenshot_png
from tests.integration.test_round_trips import KEY, WEB_ROUND_TRIPS, WORKER_ROUND_TRIPS, _at, traced_stack
from tests.support.simulator import SimulatorProcess
from tests.support.stack import wait_for

__all__ = ["traced_stack"]  # the module's stack, shared as a fixture
def _post(url: str, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """A traced streamed chat turn; (its completion id, its conversation id)."""
    sent = {"Authorization": f"Bearer {KEY}", trace.HEADER: "1", **(headers or {})}
    with requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "Balanced", "stream": True, **body},
        headers=sent,
        stream=True,
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.text
        conversation_id = r.headers["X-Conversation-Id"]
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    first = next(line for line in lines if line.startswith(b"data: {")).decode().removeprefix("data: ")
    return str(json.loads(first)["id"]), conversation_id


def _sides(redis: Redis, completion_id: str, *, worker: bool = True) -> dict[str, Any]:
    want = {"web", "worker"} if worker else {"web"}
    found = wait_for(lambda: (lambda s: s if want <= s.keys() else None)(trace.load(redis, completion_id)))
    return dict(found)


def _counts(redis: Redis, completion_id: str) -> tuple[int, int]:
    sides = _sides(redis, completion_id)
    print("web", sides["web"]["commands"], "\nworker", sides["worker"]["commands"])
    return _at(sides["web"], "enqueue"), _at(sides["worker"], "send")


def _first(url: str, prompt: str) -> tuple[str, str, list[dict[str, str]]]:
    """A new conversation's first turn: (completion id, conversation id, the history it leaves)."""
    messages = [{"role": "user", "content": prompt}]
    with requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "Balanced", "messages": messages},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.text
        body = r.json()
    answer = {"role": "assistant", "content": body["choices"][0]["message"]["content"]}
    return body["id"], r.headers["X-Conversation-Id"], [*messages, answer]


@pytest.mark.parametrize("by", ["conversation_id", "completion_id", "history"])
def test_round_trips_of_a_continued_conversation(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess, by: str
) -> None:
    url, redis = traced_stack
    counts = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        completion, conversation, history = _first(url, f"start conversation {n} to continue by {by}")
        follow = {"role": "user", "content": f"and continue it by {by}"}
        bodies: dict[str, dict[str, Any]] = {
            "conversation_id": {"messages": [follow], "conversation_id": conversation},
            "completion_id": {"messages": [follow], "id": completion},
            "history": {"messages": [*history, follow]},
        }
        completion_id, continued = _post(url, bodies[by])
        assert continued == conversation
        counts.append(_counts(redis, completion_id))
    assert counts[-1] == (CONTINUED_WEB[by], WORKER_ROUND_TRIPS)


def test_round_trips_with_an_idempotency_key(traced_stack: tuple[str, Redis], sim: SimulatorProcess) -> None:
    url, redis = traced_stack
    for n in range(2):  # the second is counted: the first loads its script into Redis
        body = {"messages": [{"role": "user", "content": f"count my round trips, idempotently {n}"}]}
        key = {"Idempotency-Key": f"round-trips-{n}"}
        completion_id, _ = _post(url, body, headers=key)
        counted = _counts(redis, completion_id)
        again, _ = _post(url, body, headers=key)  # the retry attaches to the first run (its own trace)
        assert again == completion_id
        replay = _sides(redis, completion_id, worker=False)["web"]
        print("replay", replay["commands"])
    assert counted == (WEB_ROUND_TRIPS, WORKER_ROUND_TRIPS)
    # The retry: the gate's script (door, quota: counted as before; the claim found), then the
    # attach's reads (the run's last event, its stream record, its grace, SUBSCRIBE, replay log).
    assert _at(replay, "first_byte") == REPLAY_WEB


# A conversation id is checked, read and locked by the enqueue's own script (1). A completion
# id or a history is a pointer read first, which the job's arguments need (its conversation id),
# then the same script: 2. Before, they were 6, 7 and 6 (door, quota + room, the pointer or
# match, the lock, the conversation under the lock, the enqueue), and the worker 3 (BLMOVE +
# script, the conversation, the grant of its account).
REPLAY_WEB = 7  # was 9; not on a new turn's path: nothing goes upstream
CONTINUED_WEB = {"conversation_id": 1, "completion_id": 2, "history": 2}


def test_round_trips_of_a_previous_response_id(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    url, redis = traced_stack
    headers = {"Authorization": f"Bearer {KEY}"}
    counted = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        first = requests.post(
            f"{url}/v1/responses",
            json={"model": "Balanced", "input": f"start {n}"},
            headers=headers,
            timeout=30,
        )
        assert first.status_code == 200, first.text
        body = {"model": "Balanced", "input": "and continue", "previous_response_id": first.json()["id"]}
        body["stream"] = True
        with requests.post(
            f"{url}/v1/responses", json=body, headers={**headers, trace.HEADER: "1"}, stream=True, timeout=30
        ) as second:
            assert second.status_code == 200, second.text
            events = [line for line in second.iter_lines() if line.startswith(b"data: ")]
        completion_id = json.loads(events[0].removeprefix(b"data: "))["response"]["id"]
        counted.append(_counts(redis, completion_id))
    assert counted[-1] == (PREVIOUS_RESPONSE_WEB, WORKER_ROUND_TRIPS)


# The Responses surface reads the previous response first (the names of its function calls,
# `responses.calls`), then the pointer to its conversation, then the gate's script (was 8, and
# 3 on the worker). An Idempotency-Key's first call was 5 on the web side.
PREVIOUS_RESPONSE_WEB = 3


def test_round_trips_of_a_turn_with_an_image(traced_stack: tuple[str, Redis], sim: SimulatorProcess) -> None:
    url, redis = traced_stack
    png = base64.b64encode(screenshot_png(64, 48)).decode()
    counted = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        content = [
            {"type": "text", "text": f"what is in this picture {n}?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        ]
        completion_id, _ = _post(url, {"messages": [{"role": "user", "content": content}]})
        counted.append(_counts(redis, completion_id))
    assert counted[-1] == (WEB_ROUND_TRIPS, IMAGE_WORKER)


# The image's bytes are parked by the gate's script (they were parked in a round trip of their own
# before the door: 4 on the web side) and read back by the dequeue's (a GET of their own: 2).
IMAGE_WORKER = 1
