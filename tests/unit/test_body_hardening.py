"""Bodies that once were 500s: lone surrogates on every surface (audit round 3, N9) and deep
JSON on the admin API (N11). Each is a 400 naming the field, before anything is enqueued.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from service.web import create_app

ADMIN = "admin-key-for-tests-0123456789abcdef"
LONE = "\ud800"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture()
def client(redis_url: str) -> Iterator[FlaskClient]:
    app = create_app(
        {
            "REDIS_URL": redis_url,
            "UPSTREAM": "copilot",
            "ADMIN_KEY": ADMIN,
            "SECRET_KEY": "s" * 40,
            "LOG_LEVEL": "ERROR",
        }
    )
    yield app.test_client()


@pytest.fixture()
def api_key(client: FlaskClient) -> str:
    response = client.post("/admin/keys", json={"label": "t"}, headers=AUTH)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return str(response.get_json()["key"])


def raw(body: dict[str, Any]) -> bytes:
    """JSON text with the lone surrogate spelled as JSON allows (`\\ud800`)."""
    return json.dumps(body).encode()


CHAT = {"model": "copilot", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "copilot", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": LONE}]},
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "system", "content": LONE}, CHAT["messages"][0]]},
        "messages[0].content",
    ),
    ("/v1/chat/completions", {**CHAT, "stream": LONE}, "stream"),
    ("/v1/chat/completions", {**CHAT, "id": LONE}, "id"),
    ("/v1/chat/completions", {**CHAT, "user": LONE}, "user"),
    ("/v1/chat/completions", {**CHAT, "model": LONE}, "model"),
    ("/v1/chat/completions", {**CHAT, "metadata": {LONE: "x"}}, "metadata"),
    ("/v1/responses", {"model": "copilot", "input": LONE}, "input"),
    ("/v1/responses", {"model": "copilot", "input": LONE, "store": False}, "input"),
    ("/v1/responses", {"model": "copilot", "input": "hi", "metadata": {"k": LONE}}, "metadata.k"),
    ("/v1/messages", {**MESSAGES, "messages": [{"role": "user", "content": LONE}]}, "messages[0].content"),
    ("/v1/messages/count_tokens", {**MESSAGES, "system": LONE}, "system"),
    (
        "/v1/conversations",
        {"items": [{"type": "message", "role": "user", "content": LONE}]},
        "items[0].content",
    ),
    ("/v1/conversations", {"metadata": {"k": LONE}}, "metadata.k"),
    ("/v1/images/generations", {"prompt": LONE}, "prompt"),
]


@pytest.mark.parametrize(("path", "body", "param"), CASES)
def test_a_lone_surrogate_is_a_400_naming_the_field(
    client: FlaskClient, api_key: str, redis_url: str, path: str, body: dict[str, Any], param: str
) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    response = client.post(path, data=raw(body), headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error.get("param", param) == param, error  # Anthropic's errors carry no param
    assert param in error["message"] and "surrogate" in error["message"], error
    redis = Redis.from_url(redis_url)
    assert sum(int(redis.llen(key)) for key in redis.scan_iter("rq:queue:*")) == 0


def test_a_conversation_update_with_a_lone_surrogate_is_a_400(client: FlaskClient, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    created = client.post("/v1/conversations", json={}, headers=headers)
    assert created.status_code == 200, created.get_data(as_text=True)
    path = f"/v1/conversations/{created.get_json()['id']}"
    response = client.post(path, data=raw({"metadata": {"k": LONE}}), headers=headers)
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "metadata.k"


def deep(levels: int) -> bytes:
    return b'{"label": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("method", ["post-keys", "patch-keys", "post-accounts", "patch-accounts"])
@pytest.mark.parametrize("levels", [100, 5000])
def test_deep_json_on_the_admin_api_is_a_400(
    client: FlaskClient, api_key: str, method: str, levels: int
) -> None:
    key_id = client.get("/admin/keys", headers=AUTH).get_json()["data"][0]["id"]
    verb, what = method.split("-")
    path = {"keys": "/admin/keys", "accounts": "/admin/accounts"}[what]
    if verb == "patch":
        path += f"/{key_id}" if what == "keys" else "/acct-1"
    headers = {**AUTH, "Content-Type": "application/json"}
    response = client.open(path, method=verb.upper(), data=deep(levels), headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "levels deep" in response.get_json()["error"]["message"]
