"""What agent clients probe before their first turn: the Responses websocket upgrade (426 at
once, before auth or Redis) and the model list in OpenAI's or Anthropic's shape with the
Claude Code picker ids."""

from __future__ import annotations

import pytest
from flask import Flask

from service.models import find_model, picker_ids
from service.runtime.embedded_redis import free_port
from service.web import create_app
from service.web.http.upgrade import is_responses_upgrade

SECRET = "test-secret-0123456789abcdef"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}


def app_on(redis_url: str, **overrides: str) -> Flask:
    settings = {"REDIS_URL": redis_url, "UPSTREAM": "copilot", "API_KEYS": "", "SECRET_KEY": SECRET}
    app = create_app({**settings, **overrides})
    app.config["TESTING"] = True
    return app


@pytest.mark.parametrize("path", ["/v1/responses", "/responses", "/openai/v1/responses", "/v1/responses/"])
def test_a_responses_websocket_upgrade_is_426_before_auth_or_redis(path: str) -> None:
    # Keys required and Redis unreachable: the upgrade is answered before either is consulted.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = app_on(dead, API_KEYS="sk-only-this-0123456789").test_client()
    answer = client.get(path, headers=UPGRADE)
    assert answer.status_code == 426
    assert answer.headers["Upgrade"] == "HTTP/1.1"
    error = answer.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "websocket_not_supported"
    assert "POST /v1/responses" in error["message"]


def test_only_a_websocket_get_on_responses_is_refused() -> None:
    def environ(method: str, path: str, upgrade: str | None) -> dict[str, str]:
        return {"REQUEST_METHOD": method, "PATH_INFO": path, **({"HTTP_UPGRADE": upgrade} if upgrade else {})}

    assert is_responses_upgrade(environ("GET", "/v1/responses", "WebSocket"))
    assert not is_responses_upgrade(environ("POST", "/v1/responses", "websocket"))
    assert not is_responses_upgrade(environ("GET", "/v1/responses", None))
    assert not is_responses_upgrade(environ("GET", "/v1/responses/resp_1", "websocket"))
    assert not is_responses_upgrade(environ("GET", "/v1/chat/completions", "websocket"))
    assert not is_responses_upgrade(environ("GET", "/v1/myresponses", "websocket"))


def test_picker_ids_map_to_catalog_models() -> None:
    ids = dict(picker_ids("copilot"))
    assert list(ids) == ["claude-copilot", "claude-copilot-think-deeper", "claude-copilot-gpt-5"]
    assert find_model("claude-copilot-think-deeper", "copilot").mode == "reasoning"  # type: ignore[union-attr]
    assert find_model("Claude-Copilot-GPT-5", "copilot").id == "gpt-5"  # type: ignore[union-attr]
    assert find_model("claude-opus-4-1", "copilot").id == "copilot"  # type: ignore[union-attr]  # alias
    assert [name for name, _ in picker_ids("bing")] == [
        "claude-bing-creative",
        "claude-bing-balanced",
        "claude-bing-precise",
        "claude-bing-gpt-4",
    ]


def test_models_in_openai_shape_list_the_catalog_and_the_picker_ids(redis_url: str) -> None:
    listing = app_on(redis_url).test_client().get("/v1/models").get_json()
    assert listing["object"] == "list"
    ids = [card["id"] for card in listing["data"]]
    assert {"claude-copilot", "claude-copilot-think-deeper", "copilot", "think-deeper", "gpt-5"} <= set(ids)
    assert all(card["object"] == "model" and card["owned_by"] == "copilot" for card in listing["data"])
    assert len(ids) == len(set(ids))


def test_models_in_anthropic_shape_page_with_limit_and_ids(redis_url: str) -> None:
    client = app_on(redis_url).test_client()
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-x"}
    whole = client.get("/v1/models?limit=1000", headers=headers).get_json()
    assert set(whole) == {"data", "has_more", "first_id", "last_id"}
    assert whole["has_more"] is False
    first = whole["data"][0]
    assert first == {
        "type": "model",
        "id": "claude-copilot",
        "display_name": "Copilot copilot (maps to the gateway model 'copilot')",
        "created_at": "2023-02-28T18:56:42Z",
    }
    ids = [m["id"] for m in whole["data"]]
    assert whole["first_id"] == ids[0] and whole["last_id"] == ids[-1]
    assert client.get("/v1/models", headers=headers).get_json()["data"] == whole["data"][:20]
    page = client.get("/v1/models?limit=2", headers=headers).get_json()
    assert [m["id"] for m in page["data"]] == ids[:2] and page["has_more"] is True
    following = client.get(f"/v1/models?limit=2&after_id={page['last_id']}", headers=headers).get_json()
    assert [m["id"] for m in following["data"]] == ids[2:4]
    back = client.get(f"/v1/models?limit=2&before_id={ids[3]}", headers=headers).get_json()
    assert [m["id"] for m in back["data"]] == ids[1:3] and back["has_more"] is True
    bad = client.get("/v1/models?limit=0", headers=headers)
    assert bad.status_code == 400
    assert bad.get_json()["type"] == "error" and bad.get_json()["error"]["type"] == "invalid_request_error"
    assert "limit" in bad.get_json()["error"]["message"]
