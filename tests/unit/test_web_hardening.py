"""Issue 16's web-tier hardening: /admin/ paths authenticate, security headers, CORS PATCH."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from service.web import create_app

KEY = "sk-ab0123456789wxyz"
ADMIN = "admin-0123456789abcdef0123"
SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
MakeApp = Callable[..., Flask]


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    def make(**overrides: str) -> Flask:
        settings = {
            "REDIS_URL": redis_url,
            "UPSTREAM": "bing",
            "API_KEYS": KEY,
            "SECRET_KEY": SECRET,
            "ADMIN_KEY": ADMIN,
            "QUEUE_WAIT_TIMEOUT": "1",
            **overrides,
        }
        app = create_app(settings)
        app.config["TESTING"] = True
        return app

    return make


@pytest.mark.parametrize("path", ["/admin/chat/completions", "/admin/responses", "/admin/x/v1/responses"])
@pytest.mark.parametrize("mode", ["keyed", "open"])
def test_a_catch_all_route_under_admin_is_a_404_without_reading_the_body(
    make_app: MakeApp, path: str, mode: str
) -> None:
    app = make_app(**({"API_KEYS": "", "ALLOW_OPEN": "1"} if mode == "open" else {}))
    body = json.dumps({**CHAT, "pad": "x" * 1_000_000})
    answer = app.test_client().post(path, data=body, content_type="application/json")
    assert answer.status_code == 404
    assert answer.get_json()["error"]["type"] == "invalid_request_error"


def test_admin_routes_still_answer_to_the_admin_key(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert client.get("/admin/keys").status_code == 401
    assert client.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert client.get("/admin/nothing", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404


def test_nosniff_everywhere_and_no_store_on_transcript_reads(make_app: MakeApp) -> None:
    client = make_app().test_client()
    auth = {"Authorization": f"Bearer {KEY}"}
    created = client.post("/v1/conversations", json={"items": []}, headers=auth)
    assert created.status_code == 200
    conv = created.get_json()["id"]
    for path in (f"/v1/conversations/{conv}", f"/v1/conversations/{conv}/items"):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    missing = client.get("/v1/responses/resp_nothere", headers=auth)
    assert missing.status_code == 404 and missing.headers["Cache-Control"] == "no-store"
    for answer in (client.get("/v1/models", headers=auth), client.get("/nope"), client.get("/healthz")):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_preflight_allows_patch(make_app: MakeApp) -> None:
    answer = (
        make_app()
        .test_client()
        .options(
            "/admin/keys/key_1",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PATCH"},
        )
    )
    assert answer.status_code == 204
    assert "PATCH" in answer.headers["Access-Control-Allow-Methods"].split(", ")
