"""The /admin/keys API and key-aware auth in the Flask app over a real Redis (no worker needed)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from redis import Redis

from service.access.key_usage import usage
from service.access.ratelimit import turns_key
from service.runtime.settings import SettingsError, load_settings
from service.web import create_app
from tests.unit.test_web_app import CHAT, SECRET, MakeApp, assert_openai_error

ADMIN = "admin-key-0123456789abcdef"


def admin(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    """Apps on the test Redis with no worker; keyword overrides are settings."""

    def make(**overrides: str) -> Flask:
        settings = {
            "REDIS_URL": redis_url,
            "UPSTREAM": "bing",
            "SECRET_KEY": SECRET,
            "QUEUE_WAIT_TIMEOUT": "1",
        }
        return create_app({**settings, **overrides})

    return make


@pytest.fixture()
def keyed(make_app: MakeApp) -> FlaskClient:
    """Managed keys only: ADMIN_KEY set, no API_KEYS."""
    return make_app(ADMIN_KEY=ADMIN).test_client()


def create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    created = client.post("/admin/keys", json=fields, headers=admin())
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.get_json()


def test_no_admin_key_no_admin_api(make_app: MakeApp) -> None:
    client = make_app(API_KEYS="k-0123456789", ADMIN_KEY="").test_client()
    assert_openai_error(client.get("/admin/keys", headers=admin()), 404, None)
    assert_openai_error(client.post("/admin/keys", json={}, headers=admin()), 404, None)


def test_admin_key_is_required(keyed: FlaskClient) -> None:
    assert_openai_error(keyed.get("/admin/keys"), 401, "invalid_api_key")
    assert_openai_error(keyed.get("/admin/keys", headers=admin("x" * 26)), 401, "invalid_api_key")
    assert keyed.get("/admin/keys", headers=admin()).get_json() == {"object": "list", "data": []}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1], None),
        ({"secret": "x"}, "secret"),
        ({"rpm": -2}, "rpm"),
        ({"models": "gpt-4"}, "models"),
        ({"label": 5}, "label"),
    ],
)
def test_bad_bodies_name_the_field(keyed: FlaskClient, body: Any, param: str | None) -> None:
    assert_openai_error(keyed.post("/admin/keys", json=body, headers=admin()), 400, None, param)


def test_crud_and_usage_validation(keyed: FlaskClient) -> None:
    created = create(keyed, label="ci", rpm=5)
    key_id = created["id"]
    assert created["key"].startswith(created["prefix"]) and created["limits"]["rpm"] == 5
    one = keyed.get(f"/admin/keys/{key_id}", headers=admin()).get_json()
    assert one["label"] == "ci" and "key" not in one
    patched = keyed.patch(f"/admin/keys/{key_id}", json={"rpm": None, "models": ["gpt-4*"]}, headers=admin())
    assert patched.get_json()["limits"] == {
        "rpm": None, "max_concurrent": None, "tokens_per_day": None, "models": ["gpt-4*"]
    }  # fmt: skip
    assert patched.get_json()["label"] == "ci"  # fields left out stay
    for days in ("0", "36", "x"):
        assert_openai_error(
            keyed.get(f"/admin/keys/{key_id}/usage?days={days}", headers=admin()), 400, None, "days"
        )
    assert len(keyed.get(f"/admin/keys/{key_id}/usage", headers=admin()).get_json()["data"]) == 7
    assert keyed.delete(f"/admin/keys/{key_id}", headers=admin()).get_json()["deleted"] is True
    for method in ("get", "patch", "delete"):
        answer = getattr(keyed, method)(f"/admin/keys/{key_id}", json={}, headers=admin())
        assert_openai_error(answer, 404, "key_not_found", "id")


def test_admin_key_alone_turns_auth_on(keyed: FlaskClient) -> None:
    assert_openai_error(keyed.get("/v1/models"), 401, "invalid_api_key")
    secret = create(keyed)["key"]
    assert keyed.get("/v1/models", headers=admin(secret)).status_code == 200
    assert_openai_error(keyed.get("/v1/models", headers=admin(ADMIN)), 401, "invalid_api_key")


def test_models_and_headers_follow_the_key(keyed: FlaskClient) -> None:
    secret = create(keyed, rpm=4, tokens_per_day=1000, models=["Bal*"])["key"]
    listed = keyed.get("/v1/models", headers=admin(secret))
    assert [m["id"] for m in listed.get_json()["data"]] == ["Balanced"]
    assert listed.headers["x-ratelimit-limit-requests"] == "4"
    assert listed.headers["x-ratelimit-remaining-requests"] == "4"  # listing models is not a turn
    assert listed.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert_openai_error(
        keyed.get("/v1/models/Creative", headers=admin(secret)), 404, "model_not_found", "model"
    )
    before = REGISTRY.get_sample_value("gateway_key_limited_total", {"limit": "models"}) or 0
    refused = keyed.post("/v1/chat/completions", json=CHAT, headers=admin(secret))
    assert_openai_error(refused, 403, "model_not_found", "model")
    assert REGISTRY.get_sample_value("gateway_key_limited_total", {"limit": "models"}) == before + 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "4"  # refused before counting


def test_a_turn_failing_before_its_run_gives_its_slot_back(keyed: FlaskClient, redis_client: Redis) -> None:
    created = create(keyed, max_concurrent=1)
    body = {**CHAT, "conversation_id": "conv_missing"}
    answer = keyed.post("/v1/chat/completions", json=body, headers=admin(created["key"]))
    assert answer.status_code == 404
    assert redis_client.zcard(turns_key(created["id"])) == 0
    today = usage(redis_client, created["id"], days=1)[0]
    assert (today["requests"], today["errors"]) == (1, 1)


def test_key_settings_are_strict() -> None:
    with pytest.raises(SettingsError, match="ADMIN_KEY") as short:
        load_settings({"ADMIN_KEY": "short-admin", "SECRET_KEY": SECRET})
    assert "short-admin" not in str(short.value)
    with pytest.raises(SettingsError, match="KEY_DEFAULT_RPM"):
        load_settings({"KEY_DEFAULT_RPM": "-1"})
    settings = load_settings(
        {"ADMIN_KEY": ADMIN, "SECRET_KEY": SECRET, "KEY_DEFAULT_MODELS": "gpt-4*, Balanced"}
    )
    assert settings.auth_enabled and settings.key_default_models == ("gpt-4*", "Balanced")
    assert ADMIN not in repr(settings)
