"""The whole gateway as real processes: redis-server, the simulator, gunicorn, two workers.

The stack is built once per session on its own redis-server (unit tests flush theirs).
Helpers here speak raw HTTP so tests can check the wire format byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from service.state.conversations import ConversationStore
from service.web import create_app
from tests.support.http import text_lines
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WerkzeugServer, WorkerProcess, gateway_env

DIALECTS = ("bing", "copilot")


@dataclasses.dataclass
class Stack:
    """Handles on the running gateway."""

    dialect: str
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

    def upstream(self, conversation_id: str) -> dict[str, Any]:
        """The simulator's view of the upstream conversation behind a gateway conversation."""
        return self.simulator.conversation(self.upstream_id(conversation_id))

    def upstream_users(self, conversation_id: str) -> list[str]:
        """User messages the upstream conversation received, in order."""
        return [turn["user"] for turn in self.upstream(conversation_id)["turns"]]

    def last_request(self) -> dict[str, Any]:
        """The last turn request the upstream received (ChatHub invocation or Copilot send)."""
        request = self.simulator.last_invocation() if self.dialect == "bing" else self.simulator.last_send()
        assert request is not None, "the upstream has received no turn request"
        return request


@pytest.fixture(scope="session")
def stack_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of the stack's own, never flushed under running workers."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session", params=DIALECTS)
def stack(
    request: pytest.FixtureRequest, stack_redis: EmbeddedRedis, simulator: SimulatorProcess
) -> Iterator[Stack]:
    """gunicorn (gevent) + two worker processes, pointed at the simulator, once per dialect."""
    env = gateway_env(
        stack_redis.url, simulator.http_url, UPSTREAM=request.param, RQ_QUEUE=f"chat-{request.param}"
    )
    workers: list[WorkerProcess] = []
    web = GunicornServer(env)
    try:
        workers = [WorkerProcess(env).start(), WorkerProcess(env).start()]
        web.start()
        client = Redis.from_url(stack_redis.url)
        yield Stack(
            dialect=request.param, env=env, url=web.url, redis=client, simulator=simulator, workers=workers
        )
        client.close()
    finally:
        web.stop()
        for worker in workers:
            # Cold: a turn a test abandoned (test_slot_leases kills the web process under a
            # 60 s answer) would otherwise hold the warm stop for the 25 s shutdown grace.
            worker.stop(cold=True)


@pytest.fixture()
def gateway(stack: Stack, sim: SimulatorProcess) -> Iterator[Stack]:
    """The running stack with the simulator reset; the client must not break the protocol."""
    yield stack
    assert sim.stats()["violations"] == []


@contextlib.contextmanager
def isolated_app(
    stack: Stack, queue: str, **overrides: str
) -> Iterator[tuple[WerkzeugServer, dict[str, str]]]:
    """A web app on a queue of its own (no stack worker serves it), with settings overridden.

    For tests that must control which worker runs a turn, or whether any does.
    """
    env = dict(stack.env, RQ_QUEUE=f"{queue}-{stack.dialect}", **overrides)
    server = WerkzeugServer(create_app(env)).start()
    try:
        yield server, env
    finally:
        server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.dialects("bing")` runs a test only against the dialects it names."""
    for item in items:
        marker = item.get_closest_marker("dialects")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or "stack" not in callspec.params:
            continue
        if callspec.params["stack"] not in marker.args:
            reason = marker.kwargs.get("reason", f"only for {', '.join(marker.args)}")
            item.add_marker(pytest.mark.skip(reason=reason))


def body(content: str, model: str = "Balanced", **extra: Any) -> dict[str, Any]:
    """A minimal chat completion request."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_lines(response: requests.Response) -> list[str]:
    """Every non-empty line of an SSE response, as sent."""
    return [line for line in text_lines(response) if line]


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
