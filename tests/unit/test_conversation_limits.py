"""Issue 16 item 4: Conversations API writes count against the key, and a key keeps a bounded
number of conversations (KEY_MAX_CONVERSATIONS) on every surface."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from service.access.key_usage import usage
from service.web import create_app

KEY = "sk-limits-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MakeApp = Callable[..., Flask]


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    def make(**overrides: str) -> Flask:
        app = create_app(
            {
                "REDIS_URL": redis_url,
                "UPSTREAM": "bing",
                "API_KEYS": KEY,
                "SECRET_KEY": "s" * 32,
                "QUEUE_WAIT_TIMEOUT": "1",
                **overrides,
            }
        )
        app.config["TESTING"] = True
        return app

    return make


def test_conversation_writes_count_against_the_keys_rpm(make_app: MakeApp) -> None:
    app = make_app(KEY_DEFAULT_RPM="3")
    client = app.test_client()
    codes = [client.post("/v1/conversations", json={}, headers=AUTH).status_code for _ in range(2)]
    conv = client.post("/v1/conversations", json={}, headers=AUTH)
    assert codes == [200, 200] and conv.status_code == 200
    refused = client.post("/v1/conversations", json={}, headers=AUTH)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    update = client.post(f"/v1/conversations/{conv.get_json()['id']}", json={"metadata": {}}, headers=AUTH)
    assert update.status_code == 429  # a metadata update is a write too
    with app.app_context():
        gw = app.extensions["gateway"]
        key_id = next(iter(gw.redis.scan_iter("usage:*"))).decode().split(":")[1]
        assert usage(gw.redis, key_id, days=1)[0]["requests"] == 3  # recorded like turns


def test_a_key_keeps_at_most_key_max_conversations(make_app: MakeApp) -> None:
    client = make_app(KEY_MAX_CONVERSATIONS="3").test_client()
    made = [client.post("/v1/conversations", json={}, headers=AUTH) for _ in range(3)]
    assert [answer.status_code for answer in made] == [200, 200, 200]
    refused = client.post("/v1/conversations", json={}, headers=AUTH)
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "conversation_limit_exceeded" and "KEY_MAX_CONVERSATIONS=3" in error["message"]
    # A turn that would start a new conversation is refused the same way, before it is enqueued.
    chat = {"model": "Balanced", "messages": [{"role": "user", "content": "hi"}]}
    turn = client.post("/v1/chat/completions", json=chat, headers=AUTH)
    assert turn.status_code == 429 and turn.get_json()["error"]["code"] == "conversation_limit_exceeded"
    # Deleting one makes room again.
    deleted = client.delete(f"/v1/conversations/{made[0].get_json()['id']}", headers=AUTH)
    assert deleted.status_code == 200
    assert client.post("/v1/conversations", json={}, headers=AUTH).status_code == 200
