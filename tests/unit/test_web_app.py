"""The Flask app over a real Redis: auth, CORS, ids, routing, errors, models, conversations,
and that a valid completion really enqueues its job and ends (503) when no worker runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from service.runtime.embedded_redis import free_port
from service.runtime.redis_conn import text
from service.runtime.settings import SettingsError
from service.state.conversations import Conversation, ConversationStore, owner_of
from service.web import create_app
from service.web.http.auth import MISSING_KEY
from service.web.pipeline.request import PARSE_ERROR
from tests.unit.test_web_validation import ERROR_CASES

KEY = "sk-ab0123456789wxyz"
SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
MakeApp = Callable[..., Flask]


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    """Apps on the test Redis with short waits; keyword overrides are settings."""

    def make(**overrides: str) -> Flask:
        settings = {
            "REDIS_URL": redis_url,
            "UPSTREAM": "bing",
            "API_KEYS": "",
            "SECRET_KEY": SECRET,
            "QUEUE_WAIT_TIMEOUT": "1",
            "STREAM_HOLD_SECONDS": "0.5",
            "SSE_HEARTBEAT_SECONDS": "5",
            **overrides,
        }
        app = create_app(settings)
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture()
def client(make_app: MakeApp) -> FlaskClient:
    return make_app().test_client()


@pytest.fixture()
def secured(make_app: MakeApp) -> FlaskClient:
    return make_app(API_KEYS=f"other-key, {KEY}").test_client()


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(
    response: Any, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    return error


def save_conversation(
    redis_url: str, owner: str, completion_id: str | None = None, **fields: Any
) -> Conversation:
    conversation = Conversation(id=f"conv_{owner[:8]}", owner=owner, model="Creative", **fields)
    ConversationStore(Redis.from_url(redis_url), ttl=60).save(conversation, completion_id=completion_id)
    return conversation


def enqueued_jobs(redis_url: str) -> list[Job]:
    redis = Redis.from_url(redis_url)
    ids = sorted(text(key).removeprefix("rq:job:") for key in redis.keys("rq:job:chatcmpl-*"))
    return [Job.fetch(job_id, connection=redis, serializer=JSONSerializer) for job_id in ids]


# --- app factory -----------------------------------------------------------------------


def test_create_app_requires_redis_url() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL"):
        create_app({"REDIS_URL": ""})


def test_create_app_connects_to_nothing() -> None:
    app = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    assert app.extensions["gateway"].hub.subscription_count == 0


# --- auth --------------------------------------------------------------------------------


def test_open_gateway_accepts_any_key_or_none(client: FlaskClient) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models", headers=bearer("whatever")).status_code == 200


def test_missing_key_is_401(secured: FlaskClient) -> None:
    error = assert_openai_error(secured.get("/v1/models"), 401, "invalid_api_key")
    assert error["message"] == MISSING_KEY
    assert error["type"] == "invalid_request_error"
    assert_openai_error(
        secured.get("/v1/models", headers={"Authorization": "Basic abc"}), 401, "invalid_api_key"
    )


def test_unknown_key_is_401_with_a_masked_key(secured: FlaskClient) -> None:
    error = assert_openai_error(
        secured.get("/v1/models", headers=bearer("sk-ab9999999999wxyz")), 401, "invalid_api_key"
    )
    assert error["message"] == "Incorrect API key provided: sk-ab**********wxyz."


def test_bearer_and_api_key_header_are_accepted(secured: FlaskClient) -> None:
    assert secured.get("/v1/models", headers=bearer()).status_code == 200
    assert secured.get("/v1/models", headers={"api-key": KEY}).status_code == 200


def test_healthz_and_preflight_need_no_key(secured: FlaskClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.options("/v1/chat/completions").status_code == 204


def test_auth_applies_to_completions_and_conversations(secured: FlaskClient) -> None:
    assert_openai_error(secured.post("/v1/chat/completions", json=CHAT), 401, "invalid_api_key")
    assert_openai_error(secured.get("/v1/conversations/conv_x"), 401, "invalid_api_key")


# --- CORS and request ids ------------------------------------------------------------------


def test_preflight_answers_cors(secured: FlaskClient) -> None:
    client = secured
    response = client.options("/v1/chat/completions")
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE, OPTIONS"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "x-stainless-os", "x-conversation-id", "openai-project"):
        assert name in allowed
    echoed = client.options(
        "/anything/at/all",
        headers={"Access-Control-Request-Headers": "authorization, x-stainless-foo, x-custom"},
    )
    assert echoed.status_code == 204
    assert echoed.headers["Access-Control-Allow-Headers"] == "authorization, x-stainless-foo, x-custom"


def test_every_response_has_cors_and_a_request_id(secured: FlaskClient) -> None:
    client = secured
    for response in (
        client.get("/v1/models"),
        client.post("/v1/nope"),
        client.post("/v1/chat/completions", data=b"{"),
        client.options("/v1/models"),
        client.get("/healthz"),
    ):
        assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        exposed = response.headers["Access-Control-Expose-Headers"]
        assert exposed.startswith(
            "x-request-id, X-Conversation-Id, X-Conversation-Turns-Remaining, Retry-After, x-should-retry"
        )
        assert "x-ratelimit-remaining-requests" in exposed and "x-ratelimit-reset-tokens" in exposed


def test_sane_incoming_request_ids_are_reused(client: FlaskClient) -> None:
    assert (
        client.get("/v1/models", headers={"X-Request-Id": "abc.DEF-1_2"}).headers["x-request-id"]
        == "abc.DEF-1_2"
    )
    for insane in ("a b", "x" * 129, "<script>"):
        got = client.get("/v1/models", headers={"X-Request-Id": insane}).headers["x-request-id"]
        assert got.startswith("req_") and got != insane


# --- routing, models, health, 500 ---------------------------------------------------------------


def test_models_list_and_get(client: FlaskClient) -> None:
    listing = client.get("/v1/models").get_json()
    assert listing["object"] == "list"
    catalog = ["Creative", "Balanced", "Precise", "gpt-4"]
    assert [card["id"] for card in listing["data"]] == catalog + [f"claude-bing-{m.lower()}" for m in catalog]
    assert client.get("/models").get_json() == listing
    card = client.get("/v1/models/gpt-4").get_json()
    assert card == {"id": "gpt-4", "object": "model", "created": 1677610602, "owned_by": "bing"}
    assert client.get("/models/creative").get_json()["id"] == "Creative"
    error = assert_openai_error(client.get("/v1/models/dall-e-3"), 404, "model_not_found", "model")
    assert error["message"] == (
        "The model `dall-e-3` does not exist or you do not have access to it. "
        "GET /v1/models lists the models here; MODEL_ALIASES maps other names onto them."
    )


def test_models_follow_the_configured_upstream(make_app) -> None:
    client = make_app(UPSTREAM="copilot").test_client()
    ids = [card["id"] for card in client.get("/v1/models").get_json()["data"]]
    assert ids[:3] == ["copilot", "think-deeper", "gpt-5"]
    assert {"Creative", "Balanced", "Precise", "gpt-4"} <= set(ids)
    assert client.get("/v1/models/gpt-5").get_json()["owned_by"] == "copilot"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/foo"), ("GET", "/nope"), ("POST", "/"), ("POST", "/v1/chat/completions/x")],
)
def test_unknown_paths_are_openai_404s(client: FlaskClient, method: str, path: str) -> None:
    error = assert_openai_error(client.open(path, method=method), 404, None)
    assert error == {
        "message": f"Invalid URL ({method} {path})",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_wrong_method_on_completions_is_an_openai_405(client: FlaskClient) -> None:
    error = assert_openai_error(client.get("/v1/chat/completions"), 405, None)
    assert error["message"] == "Invalid method for URL (GET /v1/chat/completions)"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/chat/completions",
        "/openai/chat/completions",
        "/api/v1/chat/completions",
        "/completions",
    ],
)
def test_every_completions_path_form_is_served(client: FlaskClient, path: str) -> None:
    assert_openai_error(client.post(path, data=b"nope", content_type="application/json"), 400, None)


def test_completions_are_503_when_redis_is_down(make_app: MakeApp) -> None:
    # (/healthz and /readyz when Redis is down: tests/unit/test_health.py)
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}").test_client()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 503, "service_unavailable")
    assert response.headers["x-should-retry"] == "true"


def test_unexpected_exceptions_are_opaque_openai_500s(make_app: MakeApp) -> None:
    app = make_app()

    def boom() -> str:
        raise RuntimeError("secret detail")

    app.add_url_rule("/v1/boom", view_func=boom)
    response = app.test_client().get("/v1/boom")
    error = assert_openai_error(response, 500, None)
    assert "secret" not in error["message"]
    assert response.headers["x-request-id"].startswith("req_")


# --- validation over HTTP ---------------------------------------------------------------------


def test_unparseable_body(client: FlaskClient) -> None:
    for raw in (b"{", b"[]", b""):
        error = assert_openai_error(
            client.post("/v1/chat/completions", data=raw, content_type="application/json"), 400, None
        )
        assert error["message"] == PARSE_ERROR


@pytest.mark.parametrize(("body", "param"), ERROR_CASES)
def test_every_validation_error_names_its_param(
    client: FlaskClient, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param
    assert "X-Conversation-Id" not in response.headers


def test_unknown_model_is_404(client: FlaskClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "dall-e-3"})
    assert_openai_error(response, 404, "model_not_found", "model")


# --- conversations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"conversation_id": "conv_missing"}, {}, "conversation_id"),
        ({"id": "chatcmpl-missing"}, {}, "id"),
        ({}, {"X-Conversation-Id": "conv_missing"}, "X-Conversation-Id"),
    ],
)
def test_unknown_conversation_is_404(
    client: FlaskClient, body: dict[str, Any], headers: dict[str, str], param: str
) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, **body}, headers=headers)
    assert_openai_error(response, 404, "conversation_not_found", param)


def test_another_keys_conversation_is_404(client: FlaskClient, redis_url: str) -> None:
    theirs = save_conversation(redis_url, owner_of("their-key", secret=SECRET))
    response = client.post(
        "/v1/chat/completions", json={**CHAT, "conversation_id": theirs.id}, headers=bearer("mine")
    )
    assert_openai_error(response, 404, "conversation_not_found", "conversation_id")
    assert client.get(f"/v1/conversations/{theirs.id}", headers=bearer("mine")).status_code == 404
    assert client.delete(f"/v1/conversations/{theirs.id}", headers=bearer("mine")).status_code == 404
    assert client.get(f"/v1/conversations/{theirs.id}", headers=bearer("their-key")).status_code == 200


def test_conversation_get_and_delete(client: FlaskClient, redis_url: str) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    mine = save_conversation(redis_url, owner_of(KEY, secret=SECRET), messages=messages)
    body = client.get(f"/v1/conversations/{mine.id}", headers=bearer()).get_json()
    assert body == {"id": mine.id, "object": "conversation", "created_at": int(mine.created), "metadata": {}}
    listed = client.get(f"/v1/conversations/{mine.id}/items?order=asc", headers=bearer()).get_json()
    assert [(item["role"], item["content"][0]["text"]) for item in listed["data"]] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    assert [item["content"][0]["type"] for item in listed["data"]] == ["input_text", "output_text"]
    deleted = client.delete(f"/v1/conversations/{mine.id}", headers=bearer())
    assert deleted.get_json() == {"id": mine.id, "object": "conversation.deleted", "deleted": True}
    assert_openai_error(
        client.get(f"/v1/conversations/{mine.id}", headers=bearer()), 404, "conversation_not_found"
    )


# --- enqueueing, with no worker running -------------------------------------------------------------


def test_completion_is_enqueued_and_ends_503_without_a_worker(client: FlaskClient, redis_url: str) -> None:
    body = {
        **CHAT,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ],
    }
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=body, headers=bearer("k1"))
    assert time.monotonic() - started < 5
    error = assert_openai_error(response, 503, "service_unavailable")
    assert error["message"] == "No worker picked up this request within 1 s; is a worker process running?"
    assert response.headers["x-should-retry"] == "true"
    # A failed first turn kept no conversation: no id that would point the client at nothing (#17).
    assert "X-Conversation-Id" not in response.headers

    [job] = enqueued_jobs(redis_url)
    conversation_id = job.args[0]["conversation_id"]
    assert conversation_id.startswith("conv_")
    assert job.func_name == "workers.jobs.run_turn"
    assert job.id.startswith("chatcmpl-")
    [payload] = job.args
    assert payload == {
        "completion_id": job.id,
        "conversation_id": conversation_id,
        "owner": owner_of("k1", secret=SECRET),
        "model": "gpt-4",
        "prompt": "second",
        "history": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}],
        "system": "Be brief.",
        "continues": False,
        "created": payload["created"],
        "lock_token": "",
        "request_id": response.headers["x-request-id"],
        "store": True,
        "images": [],
        "kind": "chat",
        "image_format": "url",  # only an image generation's b64_json changes it
        "options": {},  # no tools, structured output or cuts: the answer passes untouched
        "instructions": None,  # a new conversation: its system prompt is `system`
        "carried": {},  # no `store: false` history left an upstream conversation to continue
        "group": "default",  # the key's account group (docs/accounts-groups.md)
    }
    assert abs(payload["created"] - time.time()) < 10
    # Given up on: the job is dropped from the queue, so a late worker never runs it.
    redis = Redis.from_url(redis_url)
    assert Queue("chat", connection=redis, serializer=JSONSerializer).job_ids == []


def test_continuing_a_conversation_sends_no_history(client: FlaskClient, redis_url: str) -> None:
    mine = save_conversation(redis_url, owner_of("k1", secret=SECRET), completion_id="chatcmpl-earlier")
    body = {**CHAT, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "again"}]}
    response = client.post(
        "/v1/chat/completions", json={**body, "id": "chatcmpl-earlier"}, headers=bearer("k1")
    )
    assert_openai_error(response, 503, "service_unavailable")
    assert response.headers["X-Conversation-Id"] == mine.id
    [job] = enqueued_jobs(redis_url)
    payload = job.args[0]
    assert (payload["conversation_id"], payload["continues"]) == (mine.id, True)
    assert (payload["history"], payload["system"], payload["prompt"]) == ([], "", "again")


def test_stream_without_worker_is_a_plain_503_within_the_hold(make_app: MakeApp) -> None:
    client = make_app(STREAM_HOLD_SECONDS="3").test_client()
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert time.monotonic() - started < 2
    assert_openai_error(response, 503, "service_unavailable")
    assert "X-Conversation-Id" not in response.headers  # a failed first turn kept nothing (#17)


def test_stream_without_worker_after_the_hold_ends_with_an_error_frame(client: FlaskClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    frames = response.get_data(as_text=True).split("\n\n")
    assert frames[0].startswith('id: -1\ndata: {"id":"chatcmpl-')  # the opening frame's resume point
    assert frames[1].startswith('data: {"error":{"message":"No worker picked up')  # said here: no id
    assert frames[2:] == ["data: [DONE]", ""]
