"""The web tier's side of the emulation: which requests become TurnOptions, and which are 400s."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.web import create_app

HUGE = {"type": "object", "properties": {"a": {"enum": ["v" * 1000] * 101}}}  # over one schema's bound
LARGE = {"type": "object", "properties": {"a": {"enum": ["v" * 1000] * 26}}}  # 4 of these: over the block's
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def app_client(redis_url: str, **overrides: str) -> FlaskClient:
    settings = {"REDIS_URL": redis_url, "UPSTREAM": "bing", "API_KEYS": "", "QUEUE_WAIT_TIMEOUT": "1"}
    app = create_app({**settings, **overrides})
    app.config["TESTING"] = True
    return app.test_client()


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL]},
        ),
        ("/v1/responses", {"model": "gpt-4", "input": "x", "tools": [{"type": "function", "name": "f"}]}),
        (
            "/v1/messages",
            {
                "model": "claude-x",
                "max_tokens": 9,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "f"}],
            },
        ),
    ],
)
def test_tool_emulation_off_is_a_400_naming_tools(redis_url: str, path: str, body: dict[str, Any]) -> None:
    response = post(app_client(redis_url, TOOL_EMULATION="off", MODEL_ALIASES="claude-*=gpt-4"), path, body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "TOOL_EMULATION=off" in error["message"]
    assert error.get("param", "tools") == "tools"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "sometimes", "tools": [TOOL]}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "g"}}, "tools": [TOOL]}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 2}, "top_logprobs"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": HUGE}}]},
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": f"f{i}", "parameters": LARGE}} for i in range(4)
                ]
            },
            "tools",
        ),
    ],
)
def test_bad_tool_parameters_are_400s_naming_them(redis_url: str, extra: dict[str, Any], param: str) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], **extra}
    response = post(app_client(redis_url), "/v1/chat/completions", body)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param
