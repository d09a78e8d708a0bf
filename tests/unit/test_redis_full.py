"""Issue 16 item 4: a full Redis (maxmemory reached, noeviction) is a clear 503 on every surface.

A real redis-server is filled up to a tiny `maxmemory` with `noeviction`, so every write
is refused with `OOM command not allowed`; every surface that writes must then answer a
503 `storage_full` in OpenAI's error shape (never a 500, never "cannot reach").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from redis.exceptions import ResponseError

from service.runtime.embedded_redis import EmbeddedRedis
from service.web import create_app

KEY = "sk-full-0123456789abcdef"
ADMIN = "admin-full-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture()
def full() -> Iterator[tuple[FlaskClient, str]]:
    """An app on a Redis that refuses every write, and one conversation made before it filled."""
    with EmbeddedRedis() as server:
        app = create_app(
            {
                "REDIS_URL": server.url,
                "UPSTREAM": "copilot",
                "API_KEYS": KEY,
                "ADMIN_KEY": ADMIN,
                "SECRET_KEY": "s" * 32,
                "KEY_DEFAULT_RPM": "1000",
                "QUEUE_WAIT_TIMEOUT": "1",
            }
        )
        client = app.test_client()
        conv = client.post("/v1/conversations", json={}, headers=AUTH).get_json()["id"]
        redis = Redis.from_url(server.url)
        used = int(redis.info("memory")["used_memory"])
        redis.config_set("maxmemory-policy", "noeviction")
        redis.config_set("maxmemory", used + 512 * 1024)
        with pytest.raises(ResponseError, match="command not allowed when used memory"):
            for index in range(10_000):
                redis.set(f"filler:{index}", b"x" * 65536)
        # Closing a connection frees its buffers, and a little room lets small writes through
        # again: pin the limit under what is used, so the server stays full for the test.
        redis.config_set("maxmemory", int(redis.info("memory")["used_memory"]) // 2)
        redis.close()
        yield client, conv


CHAT: dict[str, Any] = {"model": "Balanced", "messages": [{"role": "user", "content": "hi"}]}


def _surfaces(conv: str) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    return [
        ("POST", "/v1/chat/completions", CHAT, AUTH),
        ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, AUTH),
        ("POST", "/v1/responses", {"model": "Balanced", "input": "hi"}, AUTH),
        ("POST", "/v1/messages", {"model": "Balanced", "max_tokens": 10, **CHAT}, AUTH),
        ("POST", "/v1/conversations", {"metadata": {"a": "b"}}, AUTH),
        ("POST", f"/v1/conversations/{conv}", {"metadata": {"a": "c"}}, AUTH),
        ("POST", "/v1/images/generations", {"prompt": "a cat", "model": "dall-e-3"}, AUTH),
        ("POST", "/admin/keys", {"label": "k"}, ADMIN_AUTH),
        ("POST", "/admin/accounts", {"cookies": "_U=x", "label": "a"}, ADMIN_AUTH),
    ]


def test_every_surface_answers_a_full_redis_with_a_clear_503(full: tuple[FlaskClient, str]) -> None:
    client, conv = full
    for method, path, body, headers in _surfaces(conv):
        answer = client.open(path, method=method, json=body, headers=headers)
        error = answer.get_json()["error"]
        if path == "/v1/messages":  # Anthropic's shape: its "overloaded" status for every 503
            assert answer.status_code == 529 and error["type"] == "overloaded_error", (path, error)
        else:
            assert answer.status_code == 503, (path, answer.status_code, error)
            assert error["code"] == "storage_full" and error["type"] == "api_error", (path, error)
        assert "full" in error["message"] and "memory" in error["message"], path
        assert answer.headers["Retry-After"]
    assert client.get(f"/v1/conversations/{conv}", headers=AUTH).status_code == 200  # reads still work
