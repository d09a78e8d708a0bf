"""Completions answered by a stand-in worker over real Redis: JSON and SSE shapes,
errors before and after the stream began, a dead worker, heartbeats and disconnects.

`StandInWorker` plays only the worker's side of the relay contract — take the job off
the queue, hold the liveness lease, publish with the real `Publisher` — so the web
tier is exercised end to end without the upstream. Full-stack tests with real workers
live in tests/integration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from service.errors import RateLimited
from service.relay import Publisher
from service.turns import cancel_key, lease_key
from service.web import create_app

CHAT = {"model": "Creative", "messages": [{"role": "user", "content": "Tell me about cats"}]}
Script = Callable[["StandInWorker"], None]


class StandInWorker(threading.Thread):
    """Takes the next job off the queue and runs `script` against its relay."""

    def __init__(self, redis_url: str, script: Script, *, lease_seconds: int = 5) -> None:
        super().__init__(daemon=True)
        self.redis = Redis.from_url(redis_url)
        self.script = script
        self.lease_seconds = lease_seconds
        self.job_id = ""
        self.payload: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            queue = Queue("chat", connection=self.redis, serializer=JSONSerializer)
            deadline = time.monotonic() + 5
            while not queue.job_ids:
                assert time.monotonic() < deadline, "no job was enqueued"
                time.sleep(0.01)
            job = queue.fetch_job(queue.job_ids[0])
            queue.remove(job.id)
            self.job_id, self.payload = job.id, job.args[0]
            self.lease()
            self.publisher = Publisher(self.redis, job.id, coalesce_ms=0)
            self.script(self)
        except BaseException as exc:  # surfaced by `join_ok`
            self.error = exc

    def lease(self) -> None:
        self.redis.set(lease_key(self.job_id), b"1", ex=self.lease_seconds)

    def finish(self, event: dict[str, Any]) -> None:
        self.publisher.finish(event)
        self.redis.delete(lease_key(self.job_id))

    def join_ok(self) -> None:
        self.join(10)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture()
def app(redis_url: str) -> Flask:
    return create_app(
        {
            "REDIS_URL": redis_url,
            "API_KEYS": "",
            "QUEUE_WAIT_TIMEOUT": "3",
            "STREAM_HOLD_SECONDS": "1",
            "SSE_HEARTBEAT_SECONDS": "1",
        }
    )


def run(
    app: Flask, redis_url: str, body: dict[str, Any], script: Script, **kwargs: Any
) -> tuple[Any, StandInWorker]:
    worker = StandInWorker(redis_url, script, **kwargs)
    worker.start()
    response = app.test_client().post("/v1/chat/completions", json=body)
    response.get_data()
    worker.join_ok()
    return response, worker


def frames(response: Any) -> list[str]:
    text = response.get_data(as_text=True)
    assert text.endswith("\n\n")
    return text[:-2].split("\n\n")


def answer_with_citation(worker: StandInWorker) -> None:
    worker.publisher.event({"type": "progress", "kind": "search", "text": "Searching the web for: cats"})
    worker.publisher.delta("Cats purr")
    worker.publisher.event({"type": "citation", "index": 1, "url": "https://cats.example", "title": "Cats"})
    worker.publisher.delta("[^1^].")
    worker.publisher.event({"type": "suggestions", "items": ["Why?"]})
    worker.finish({"type": "done", "text": "Cats purr[^1^].", "finish_reason": "stop"})


def test_non_stream_answer(app: Flask, redis_url: str) -> None:
    response, worker = run(app, redis_url, CHAT, answer_with_citation)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == worker.job_id
    assert body["object"] == "chat.completion"
    assert body["model"] == "Creative"
    assert body["created"] == worker.payload["created"]
    assert list(body) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Cats purr[^1^].",
        "refusal": None,
        "annotations": [
            {
                "type": "url_citation",
                "url_citation": {
                    "url": "https://cats.example",
                    "title": "Cats",
                    "start_index": 9,
                    "end_index": 14,
                },
            }
        ],
    }
    usage = body["usage"]
    assert usage["prompt_tokens"] > 3 and usage["completion_tokens"] > 0
    assert response.headers["X-Conversation-Id"] == worker.payload["conversation_id"]
    assert app.extensions["gateway"].hub.subscription_count == 0


def test_stream_answer_with_usage(app: Flask, redis_url: str) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response, worker = run(app, redis_url, body, answer_with_citation)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Conversation-Id"] == worker.payload["conversation_id"]
    sent = frames(response)
    assert sent[-1] == "data: [DONE]"
    assert ": Searching the web for: cats" in sent
    chunks = [json.loads(f.removeprefix("data: ")) for f in sent[:-1] if f.startswith("data: ")]
    assert all(c["id"] == worker.job_id and c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(d.get("content", "") for d in deltas) == "Cats purr[^1^]."
    assert deltas[-2] == {
        "annotations": [
            {
                "type": "url_citation",
                "url_citation": {
                    "url": "https://cats.example",
                    "title": "Cats",
                    "start_index": 9,
                    "end_index": 14,
                },
            }
        ]
    }
    assert deltas[-1] == {} and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert app.extensions["gateway"].hub.subscription_count == 0


def rate_limited(worker: StandInWorker) -> None:
    worker.finish({"type": "error", "error": RateLimited("Slow down.", retry_after=30).to_event()})


@pytest.mark.parametrize("stream", [False, True])
def test_an_early_error_is_a_real_http_status(app: Flask, redis_url: str, stream: bool) -> None:
    response, worker = run(app, redis_url, {**CHAT, "stream": stream}, rate_limited)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"
    assert response.get_json()["error"] == {
        "message": "Slow down.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert response.headers["X-Conversation-Id"] == worker.payload["conversation_id"]
    assert not worker.redis.exists(cancel_key(worker.job_id))


def test_an_error_after_the_stream_began_is_an_error_frame(app: Flask, redis_url: str) -> None:
    def fail_midway(worker: StandInWorker) -> None:
        worker.publisher.delta("Cats")
        time.sleep(0.05)
        worker.finish({"type": "error", "error": RateLimited("Slow down.", retry_after=30).to_event()})

    response, _ = run(app, redis_url, {**CHAT, "stream": True}, fail_midway)
    assert response.status_code == 200
    sent = frames(response)
    assert json.loads(sent[-2].removeprefix("data: "))["error"]["code"] == "rate_limit_exceeded"
    assert sent[-1] == "data: [DONE]"


def test_a_dead_worker_is_reported_not_waited_for(app: Flask, redis_url: str) -> None:
    def die(worker: StandInWorker) -> None:
        worker.publisher.delta("Cats")  # then nothing: the lease lapses

    started = time.monotonic()
    response, worker = run(app, redis_url, CHAT, die, lease_seconds=1)
    assert time.monotonic() - started < 4
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "worker_lost"
    assert worker.redis.exists(cancel_key(worker.job_id))


def test_silence_is_filled_with_heartbeats(app: Flask, redis_url: str) -> None:
    def slow(worker: StandInWorker) -> None:
        worker.publisher.delta("Cats")
        time.sleep(1.3)
        worker.lease()
        worker.finish({"type": "done", "text": "Cats", "finish_reason": "stop"})

    response, _ = run(app, redis_url, {**CHAT, "stream": True}, slow)
    assert ": keep-alive" in frames(response)


def test_a_client_that_goes_away_cancels_the_turn(app: Flask, redis_url: str) -> None:
    cancelled = threading.Event()

    def wait_for_cancel(worker: StandInWorker) -> None:
        worker.publisher.delta("Cats")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if worker.redis.exists(cancel_key(worker.job_id)):
                cancelled.set()
                break
            time.sleep(0.02)
        worker.redis.delete(lease_key(worker.job_id))

    worker = StandInWorker(redis_url, wait_for_cancel)
    worker.start()
    response = app.test_client().post("/v1/chat/completions", json={**CHAT, "stream": True}, buffered=False)
    body = iter(response.response)
    assert b'"role":"assistant"' in next(body)
    assert b'"content":"Cats"' in next(body)
    response.close()
    worker.join_ok()
    assert cancelled.is_set()
    assert app.extensions["gateway"].hub.subscription_count == 0


def test_closing_a_stream_before_reading_it_still_cleans_up(app: Flask, redis_url: str) -> None:
    def hold_on(worker: StandInWorker) -> None:
        worker.publisher.delta("Cats")
        time.sleep(0.3)
        worker.redis.delete(lease_key(worker.job_id))

    worker = StandInWorker(redis_url, hold_on)
    worker.start()
    response = app.test_client().post("/v1/chat/completions", json={**CHAT, "stream": True}, buffered=False)
    response.close()
    worker.join_ok()
    assert worker.redis.exists(cancel_key(worker.job_id))
    assert app.extensions["gateway"].hub.subscription_count == 0
