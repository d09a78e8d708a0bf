"""Safe by default: open mode is loopback-only and browser-proof, owner tags are keyed HMACs,
and settings errors never echo a credential.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from service.runtime.settings import SettingsError, load_settings
from service.state.conversations import owner_of
from service.web import create_app

SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
MakeApp = Callable[..., Flask]


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    def make(**overrides: str) -> Flask:
        app = create_app(
            {
                "REDIS_URL": redis_url,
                "UPSTREAM": "bing",
                "API_KEYS": "",
                "CORS_ALLOW_ORIGINS": "",
                "ALLOW_OPEN": "",
                "SECRET_KEY": SECRET,
                "QUEUE_WAIT_TIMEOUT": "1",
                "STREAM_HOLD_SECONDS": "0.5",
                **overrides,
            }
        )
        app.config["TESTING"] = True
        return app

    return make


# --- settings ---------------------------------------------------------------------------------


def test_open_mode_listens_on_loopback_unless_allowed_or_keyed() -> None:
    assert load_settings({}).listen_host == "127.0.0.1"
    assert load_settings({"ALLOW_OPEN": "1"}).listen_host == "0.0.0.0"
    assert load_settings({"API_KEYS": "k", "SECRET_KEY": SECRET}).listen_host == "0.0.0.0"
    with pytest.raises(SettingsError, match="ALLOW_OPEN"):
        load_settings({"ALLOW_OPEN": "maybe"})


def test_keys_require_a_secret_key() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY is required when API_KEYS is set"):
        load_settings({"API_KEYS": "k1"})
    with pytest.raises(SettingsError, match="SECRET_KEY") as short:
        load_settings({"API_KEYS": "k1", "SECRET_KEY": "hunter2"})
    assert "hunter2" not in str(short.value)
    assert load_settings({"API_KEYS": "k1", "SECRET_KEY": SECRET}).secret_key == SECRET


def test_cors_default_depends_on_mode() -> None:
    assert load_settings({}).cors_origins == ()
    assert load_settings({"API_KEYS": "k", "SECRET_KEY": SECRET}).cors_origins == ("*",)
    assert load_settings({"CORS_ALLOW_ORIGINS": "https://a.example, https://b.example"}).cors_origins == (
        "https://a.example",
        "https://b.example",
    )


@pytest.mark.parametrize(
    "url",
    ["redis://:s3cr3t-pw@127.0.0.1:notaport/0", "redis://user:s3cr3t-pw@host:99999/0", "http://:s3cr3t-pw@x"],
)
def test_a_bad_redis_url_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"REDIS_URL": url})
    message = str(raised.value)
    assert "REDIS_URL" in message and "***" in message
    assert "s3cr3t-pw" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_secret_settings_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SECRET_KEY": "short-secret"})
    assert "short-secret" not in str(raised.value)


# --- owner tags -------------------------------------------------------------------------------


def test_owner_tag_is_an_hmac_keyed_with_the_server_secret() -> None:
    tag = owner_of("sk-user-key", secret=SECRET)
    assert len(tag) == 32
    assert tag == owner_of("sk-user-key", secret=SECRET)
    assert tag != owner_of("sk-user-key", secret=SECRET + "x")
    assert tag != owner_of("sk-other-key", secret=SECRET)
    # Not the bare hash a reader of Redis could test guessed keys against.
    assert tag != hashlib.sha256(b"sk-user-key").hexdigest()[:32]


def test_changing_the_secret_key_hides_existing_conversations(make_app: MakeApp, redis_url: str) -> None:
    from redis import Redis

    from service.state.conversations import Conversation, ConversationStore

    store = ConversationStore(Redis.from_url(redis_url), ttl=60)
    store.save(Conversation(id="conv_secretrot", owner=owner_of("k1", secret=SECRET), model="Creative"))
    headers = {"Authorization": "Bearer k1"}
    keyed = {"API_KEYS": "k1"}
    assert (
        make_app(**keyed).test_client().get("/v1/conversations/conv_secretrot", headers=headers).status_code
        == 200
    )
    rotated = make_app(**keyed, SECRET_KEY=SECRET + "-rotated").test_client()
    assert rotated.get("/v1/conversations/conv_secretrot", headers=headers).status_code == 404


# --- CORS and body types ------------------------------------------------------------------------


def cors(response: Any) -> str | None:
    return response.headers.get("Access-Control-Allow-Origin")


def test_open_gateway_allows_no_browser_origin_by_default(make_app: MakeApp) -> None:
    client = make_app().test_client()
    origin = {"Origin": "https://evil.example"}
    preflight = client.options(
        "/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert cors(preflight) is None and "Access-Control-Allow-Methods" not in preflight.headers
    assert cors(client.get("/v1/models", headers=origin)) is None


def test_keyed_gateway_allows_every_origin_by_default(make_app: MakeApp) -> None:
    client = make_app(API_KEYS="k1").test_client()
    preflight = client.options("/v1/chat/completions", headers={"Origin": "https://app.example"})
    assert cors(preflight) == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE, OPTIONS"
    assert cors(client.get("/v1/models", headers={"Authorization": "Bearer k1"})) == "*"


def test_configured_origins_are_echoed_one_at_a_time(make_app: MakeApp) -> None:
    client = make_app(CORS_ALLOW_ORIGINS="https://chat.example,https://other.example").test_client()
    allowed = client.get("/v1/models", headers={"Origin": "https://chat.example"})
    assert cors(allowed) == "https://chat.example"
    assert "Origin" in allowed.headers["Vary"]
    assert (
        cors(client.options("/v1/models", headers={"Origin": "https://chat.example"}))
        == "https://chat.example"
    )
    refused = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert cors(refused) is None and "Origin" in refused.headers["Vary"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_open_gateway_refuses_non_json_posts_with_415(make_app: MakeApp, content_type: str | None) -> None:
    client = make_app().test_client()
    kwargs: dict[str, Any] = {"data": b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}'}
    if content_type:
        kwargs["content_type"] = content_type
    response = client.post("/v1/chat/completions", **kwargs)
    assert response.status_code == 415
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "unsupported_media_type"
    assert error["type"] == "invalid_request_error"
    assert "application/json" in error["message"]


def test_keyed_gateway_accepts_a_json_body_under_any_type(make_app: MakeApp) -> None:
    client = make_app(API_KEYS="k1").test_client()
    response = client.post(
        "/v1/chat/completions",
        data=b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}',
        content_type="application/x-www-form-urlencoded",  # what `curl -d` sends
        headers={"Authorization": "Bearer k1"},
    )
    assert response.status_code == 404  # parsed and judged: unknown model, not 415
    assert response.get_json()["error"]["code"] == "model_not_found"


# --- logs -----------------------------------------------------------------------------------------


def test_log_lines_never_carry_a_url_password() -> None:
    import io
    import logging

    from service.runtime.logs import FORMAT, IdsFilter, RedactingFormatter

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(IdsFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    try:
        logger.error("event=redis_down url=%s", "redis://:pw-SECRET-1@10.0.0.5:6379/0")
        try:
            raise ConnectionError("cannot reach rediss://default:pw-SECRET-2@cache.example:6380")
        except ConnectionError:
            logger.exception("event=boom")
    finally:
        logger.removeHandler(handler)
    text = sink.getvalue()
    assert "redis://:***@10.0.0.5:6379/0" in text and "rediss://default:***@cache.example" in text
    assert "pw-SECRET" not in text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ADMIN_KEY", "change-me-admin-key"),
        ("SECRET_KEY", "change-me-to-32-random-bytes"),
        ("API_KEYS", "sk-real-0123456789abcdef, sk-change-me"),
        ("ADMIN_KEY", "CHANGEME-please-0123456789"),
    ],
)
def test_placeholder_secrets_are_refused(key: str, value: str) -> None:
    environ = {"API_KEYS": "sk-real-0123456789abcdef", "SECRET_KEY": "s" * 32, key: value}
    with pytest.raises(SettingsError, match=f"{key} holds a placeholder value") as info:
        load_settings(environ)
    assert "sk-real" not in str(info.value)  # no value is echoed, placeholder or not


def test_require_auth_refuses_an_open_gateway() -> None:
    with pytest.raises(SettingsError, match="REQUIRE_AUTH"):
        load_settings({"REQUIRE_AUTH": "1"})
    assert load_settings({"REQUIRE_AUTH": "1", "ADMIN_KEY": "a" * 20, "SECRET_KEY": "s" * 32}).auth_enabled
