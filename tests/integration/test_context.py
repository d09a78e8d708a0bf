"""Context carries: by id, across worker processes, through injected history, past upstream limits."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import requests
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.integration.conftest import Stack, body, isolated_app
from tests.support.stack import WerkzeugServer, WorkerProcess


def answer(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_history_of_a_new_conversation_is_injected_with_the_system_prompt(gateway: Stack) -> None:
    response = gateway.post(
        {
            "model": "Balanced",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "I live in Oslo"},
                {"role": "assistant", "content": "Nice city."},
                {"role": "user", "content": [{"type": "text", "text": "[sim:recall] where?"}]},
            ],
        }
    )
    assert answer(response) == "Earlier you said: I live in Oslo (system: Be brief.)"
    [description] = gateway.upstream(response.headers["X-Conversation-Id"])["context"]
    assert "[assistant](#message)\nNice city." in description


@pytest.mark.dialects("bing", reason="Copilot documents no conversation expiry")
def test_expired_upstream_conversation_rolls_over_with_context(gateway: Stack) -> None:
    first = gateway.post(body("remember kiwi"))
    conversation_id = first.headers["X-Conversation-Id"]
    old_upstream = gateway.upstream_id(conversation_id)
    gateway.simulator.configure(clock_offset=7 * 3600)  # past ChatHub's 6 h expiry
    second = gateway.post(body("[sim:recall] fruit?", id=first.json()["id"]))
    assert answer(second) == "Earlier you said: remember kiwi"
    assert second.headers["X-Conversation-Id"] == conversation_id
    assert gateway.upstream_id(conversation_id) != old_upstream


@pytest.mark.dialects("bing", reason="Copilot documents no per-conversation turn limit")
def test_turn_limit_rolls_over_with_the_same_conversation_id(gateway: Stack) -> None:
    gateway.simulator.configure(max_turns=2)
    first = gateway.post(body("one"))
    conversation_id = first.headers["X-Conversation-Id"]
    gateway.post(body("two", conversation_id=conversation_id))
    old_upstream = gateway.upstream_id(conversation_id)
    third = gateway.post(body("[sim:recall] three", conversation_id=conversation_id))
    assert answer(third) == "Earlier you said: one | two"
    assert third.headers["X-Conversation-Id"] == conversation_id
    assert gateway.upstream_id(conversation_id) != old_upstream


@pytest.fixture()
def isolated(gateway: Stack) -> Iterator[tuple[WerkzeugServer, dict[str, str]]]:
    """A web app and queue of this test's own, so it controls which worker runs what."""
    with isolated_app(gateway, "cross-process") as app:
        yield app


def test_a_conversation_continues_on_another_worker_process(
    gateway: Stack, isolated: tuple[WerkzeugServer, dict[str, str]]
) -> None:
    server, env = isolated
    first_worker = WorkerProcess(env).start()
    try:
        first = requests.post(server.url + "/v1/chat/completions", json=body("I like tea"), timeout=30)
        assert first.status_code == 200
    finally:
        first_worker.stop(signal.SIGTERM)
    second_worker = WorkerProcess(env).start()
    try:
        second = requests.post(
            server.url + "/v1/chat/completions",
            json=body("[sim:recall] drink?", id=first.json()["id"]),
            timeout=30,
        )
        assert answer(second) == "Earlier you said: I like tea"
    finally:
        second_worker.stop(signal.SIGTERM)
    ran_on = {
        Job.fetch(r.json()["id"], connection=gateway.redis, serializer=JSONSerializer).worker_name
        for r in (first, second)
    }
    assert len(ran_on) == 2
    assert gateway.upstream_users(first.headers["X-Conversation-Id"]) == ["I like tea", "[sim:recall] drink?"]
