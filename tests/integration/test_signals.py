"""Processes signalled mid-turn: every ending is bounded and visible, and nothing is left behind.

A worker killed (SIGKILL) or stopped twice (SIGTERM, SIGTERM) mid-turn, and a web
process stopped (SIGTERM) mid-stream: the client gets an error it can act on, the
conversation's lock and the request's Idempotency-Key claim are free at once, the
stored transcript is what it was before the turn, and the next turn works.
(`test_lifecycle.py` covers a SIGKILL on a new conversation without these extras.)
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import requests
from redis import Redis

from service.state import idempotency, locks
from tests.integration.conftest import Stack, body, isolated_app, sse_data
from tests.support.http import text_lines
from tests.support.stack import GunicornServer, WerkzeugServer, WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dialects("bing", reason="the mechanism is the same for both")]

SLOW_TURN = "[sim:slow=0.5][sim:long=8] go on"  # ~4 s of answer: long enough to be caught mid-turn


def post_raw(url: str, payload: dict[str, Any], key: str | None = None, **kwargs: Any) -> requests.Response:
    """POST exactly `json.dumps(payload)`, so the test knows the body digest its claim is under."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(
        f"{url}/v1/chat/completions", data=json.dumps(payload), headers=headers, timeout=60, **kwargs
    )


def claims_for(redis: Redis, payload: dict[str, Any]) -> list[str]:
    """Idempotency claims held for this exact request body."""
    digest = idempotency.body_digest(json.dumps(payload).encode())
    return [
        key.decode()
        for key in redis.scan_iter("idem:*")
        if (raw := redis.get(key)) is not None and json.loads(raw).get("body") == digest
    ]


def transcript(url: str, conversation_id: str) -> dict[str, Any]:
    """The stored transcript as `{"messages": [{"role", "content"}, …]}`, read via the Conversations API."""
    response = requests.get(f"{url}/v1/conversations/{conversation_id}/items?order=asc", timeout=10)
    assert response.status_code == 200
    items = response.json()["data"]
    return {"messages": [{"role": i["role"], "content": i["content"][0]["text"]} for i in items]}


@pytest.fixture()
def solo(gateway: Stack) -> Iterator[tuple[WerkzeugServer, dict[str, str]]]:
    """A web app whose queue only the test's own worker serves."""
    with isolated_app(gateway, "signals", QUEUE_WAIT_TIMEOUT="10") as app:
        yield app


def start_continued_turn(
    gateway: Stack, server: WerkzeugServer, key: str
) -> tuple[str, dict[str, Any], dict[str, Any], Future[requests.Response]]:
    """A first turn, then a slow second one on the same conversation under `key`, caught mid-answer."""
    first = post_raw(server.url, body("keep me"))
    assert first.status_code == 200
    conversation_id = first.headers["X-Conversation-Id"]
    before = transcript(server.url, conversation_id)
    payload = body(SLOW_TURN, conversation_id=conversation_id)
    pool = ThreadPoolExecutor(1)
    pending = pool.submit(post_raw, server.url, payload, key)
    pool.shutdown(wait=False)
    wait_for(lambda: gateway.simulator.stats()["busy_sockets"] == 1)
    return conversation_id, before, payload, pending


def test_sigkill_mid_turn_frees_the_lock_and_the_claim_and_keeps_the_transcript(
    gateway: Stack, solo: tuple[WerkzeugServer, dict[str, str]]
) -> None:
    server, env = solo
    worker = WorkerProcess(env).start()
    try:
        conversation_id, before, payload, pending = start_continued_turn(gateway, server, "kill-me-1")
        worker.kill()  # SIGKILL: no chance to say goodbye
        lost = pending.result(timeout=30)  # noticed within about WORKER_LEASE_SECONDS
    finally:
        worker.stop(signal.SIGKILL)
    assert lost.status_code == 502
    assert lost.json()["error"]["code"] == "worker_lost"
    # Nothing the dead worker held outlives the answer: not the lock, not the claim.
    assert not gateway.redis.exists(locks.lock_key(conversation_id))
    assert claims_for(gateway.redis, payload) == []
    assert transcript(server.url, conversation_id) == before

    # A retry with the same key really runs again, on the same conversation, at once.
    worker = WorkerProcess(env).start()
    try:
        retried = post_raw(server.url, payload, "kill-me-1")
    finally:
        worker.stop(signal.SIGKILL)
    assert retried.status_code == 200, retried.text
    messages = transcript(server.url, conversation_id)["messages"]
    assert messages[:2] == before["messages"]
    assert [m["content"] for m in messages[2:3]] == [SLOW_TURN]
    assert len(messages) == 4


def test_sigterm_mid_turn_lets_the_turn_finish(
    gateway: Stack, solo: tuple[WerkzeugServer, dict[str, str]]
) -> None:
    server, env = solo
    worker = WorkerProcess(env).start()
    try:
        conversation_id, before, _, pending = start_continued_turn(gateway, server, "term-once")
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)  # warm shutdown: running turns finish
        done = pending.result(timeout=30)
        assert worker.process.wait(30) == 0
    finally:
        worker.stop(signal.SIGKILL)
    assert done.status_code == 200, done.text
    assert not gateway.redis.exists(locks.lock_key(conversation_id))
    assert len(transcript(server.url, conversation_id)["messages"]) == len(before["messages"]) + 2


def test_sigterm_twice_mid_turn_ends_it_visibly_and_frees_everything(
    gateway: Stack, solo: tuple[WerkzeugServer, dict[str, str]]
) -> None:
    server, env = solo
    worker = WorkerProcess(env).start()
    try:
        conversation_id, before, payload, pending = start_continued_turn(gateway, server, "term-twice")
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # let the first signal be handled before the second (not an assertion)
        worker.process.send_signal(signal.SIGTERM)  # cold: the running turn is stopped
        stopped = pending.result(timeout=30)
        worker.process.wait(30)
    finally:
        worker.stop(signal.SIGKILL)
    assert stopped.status_code == 503
    assert stopped.json()["error"]["code"] == "worker_restarting"
    assert stopped.headers["x-should-retry"] == "true"
    assert not gateway.redis.exists(locks.lock_key(conversation_id))
    assert claims_for(gateway.redis, payload) == []
    assert transcript(server.url, conversation_id) == before


def test_web_sigterm_mid_stream_ends_the_stream_with_an_error_event_in_time(gateway: Stack) -> None:
    # graceful_timeout 5 s instead of 25, so the test is short; the drain ends open
    # streams DRAIN_MARGIN_SECONDS before it, whatever its value.
    web = GunicornServer(dict(gateway.env, GUNICORN_CMD_ARGS="--graceful-timeout 5")).start()
    try:
        first = requests.post(f"{web.url}/v1/chat/completions", json=body("keep me"), timeout=30)
        conversation_id = first.headers["X-Conversation-Id"]
        before = transcript(web.url, conversation_id)
        payload = body("[sim:slow=0.5][sim:long=100] go on", stream=True, conversation_id=conversation_id)
        response = post_raw(web.url, payload, "web-term", stream=True)
        assert response.status_code == 200
        lines = text_lines(response)
        next(line for line in lines if line.startswith("data: "))
        assert web.process is not None
        web.process.send_signal(signal.SIGTERM)
        rest = sse_data(sse_lines_from(lines))
        assert web.process.wait(15) == 0
    finally:
        web.stop()
    assert rest[-1] == "[DONE]"
    assert rest[-2]["error"]["code"] == "service_unavailable"
    # The abandoned turn is cancelled: it frees the lock and is not stored.
    wait_for(lambda: not gateway.redis.exists(locks.lock_key(conversation_id)), timeout=15)
    assert claims_for(gateway.redis, payload) == []
    assert transcript(gateway.url, conversation_id) == before
    after = gateway.post(body("[sim:recall] ?", conversation_id=conversation_id))
    assert after.json()["choices"][0]["message"]["content"] == "Earlier you said: keep me"


def sse_lines_from(lines: Iterator[str]) -> list[str]:
    return [line for line in lines if line]
