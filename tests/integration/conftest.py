"""The whole gateway as real processes: redis-server, the simulator, gunicorn, two workers.

The stack is built once per session on its own redis-server (unit tests flush theirs).
Helpers here speak raw HTTP so tests can check the wire format byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from service.conversations import ConversationStore
from service.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env


@dataclasses.dataclass
class Stack:
    """Handles on the running gateway."""

    env: dict[str, str]
    url: str
    redis: Redis
    simulator: SimulatorProcess
    workers: list[WorkerProcess]

    def post(
        self, body: dict[str, Any], path: str = "/v1/chat/completions", **kwargs: Any
    ) -> requests.Response:
        """POST a chat completion request."""
        kwargs.setdefault("timeout", 60)
        return requests.post(self.url + path, json=body, **kwargs)

    def upstream_id(self, conversation_id: str) -> str:
        """The simulator's conversation id behind a gateway conversation."""
        conversation = ConversationStore(self.redis, ttl=60).get(conversation_id)
        assert conversation is not None and conversation.handle is not None
        return str(conversation.handle["conversation_id"])


@pytest.fixture(scope="session")
def stack_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of the stack's own, never flushed under running workers."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def stack(stack_redis: EmbeddedRedis, simulator: SimulatorProcess) -> Iterator[Stack]:
    """gunicorn (gevent) + two worker processes, pointed at the simulator."""
    env = gateway_env(stack_redis.url, simulator.http_url)
    workers: list[WorkerProcess] = []
    web = GunicornServer(env)
    try:
        workers = [WorkerProcess(env).start(), WorkerProcess(env).start()]
        web.start()
        client = Redis.from_url(stack_redis.url)
        yield Stack(env=env, url=web.url, redis=client, simulator=simulator, workers=workers)
        client.close()
    finally:
        web.stop()
        for worker in workers:
            worker.stop()


@pytest.fixture()
def gateway(stack: Stack, sim: SimulatorProcess) -> Iterator[Stack]:
    """The running stack with the simulator reset; the client must not break the protocol."""
    yield stack
    assert sim.stats()["violations"] == []


def body(content: str, model: str = "Balanced", **extra: Any) -> dict[str, Any]:
    """A minimal chat completion request."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_lines(response: requests.Response) -> list[str]:
    """Every non-empty line of an SSE response, as sent."""
    return [line for line in response.iter_lines(decode_unicode=True) if line]


def sse_data(lines: list[str]) -> list[Any]:
    """The `data:` payloads, JSON-decoded except the final `[DONE]`."""
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def streamed_text(chunks: list[Any]) -> str:
    """Concatenated `delta.content` of chat.completion.chunk objects."""
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        if isinstance(chunk, dict) and chunk.get("object") == "chat.completion.chunk"
        for choice in chunk["choices"]
    )
