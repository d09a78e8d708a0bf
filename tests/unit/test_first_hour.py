"""Small wrong answers a new operator met in the first hour (issue #17), each as it was seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from service.data_dir import cli_environ, write_redis_file
from service.models import find_model
from service.runtime.settings import SettingsError, load_settings
from service.web import create_app

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-key-0123456789abcdef"
CHAT = {"model": "gpt-6.2-sol", "messages": [{"role": "user", "content": "hi"}]}


def make_app(redis_url: str, **overrides: str) -> Flask:
    settings = {
        "REDIS_URL": redis_url,
        "UPSTREAM": "copilot",
        "ADMIN_KEY": ADMIN,
        "SECRET_KEY": "test-secret-key-0123456789",
        **overrides,
    }
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.mark.parametrize(
    ("name", "upstream", "model"),
    [
        ("gpt-6.2-sol", "copilot", "copilot"),  # Codex CLI 0.171's default (item 4)
        ("gpt-4-turbo", "copilot", "copilot"),
        ("gpt-5.1-codex", "copilot", "gpt-5"),  # a family mapped before the catch-all still wins
        ("copilot", "bing", "Balanced"),  # the README's example model under UPSTREAM=bing (item 7)
        ("gpt-6.2-sol", "bing", "Balanced"),
    ],
)
def test_openai_families_and_the_readme_model_map_by_default(name: str, upstream: str, model: str) -> None:
    spec = find_model(name, upstream)
    assert spec is not None and spec.id == model


def test_model_not_found_says_where_to_look(redis_url: str) -> None:
    client = make_app(redis_url, API_KEYS="sk-ab0123456789wxyz").test_client()
    key = {"Authorization": "Bearer sk-ab0123456789wxyz"}
    for path, body in (
        ("/v1/chat/completions", {**CHAT, "model": "llama-3"}),
        ("/v1/responses", {"model": "llama-3", "input": "hi"}),
    ):
        answer = client.post(path, json=body, headers=key)
        assert answer.status_code == 404, answer.get_data(as_text=True)
        message = answer.get_json()["error"]["message"]
        assert "/v1/models" in message and "MODEL_ALIASES" in message
    card = client.get("/v1/models/llama-3", headers=key)
    assert "MODEL_ALIASES" in card.get_json()["error"]["message"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_admin_routes_read_json_under_any_content_type(redis_url: str, content_type: str | None) -> None:
    # `curl -d '{…}'` sends a form content type: the admin key proves the caller (item 3).
    client = make_app(redis_url).test_client()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"label": "desk", "cookies": "_U=x"})
    added = client.post("/admin/accounts", data=body, headers=headers)
    assert added.status_code == 201, added.get_data(as_text=True)
    key = client.post("/admin/keys", data=json.dumps({"label": "k"}), headers=headers)
    assert key.status_code == 201, key.get_data(as_text=True)
    patched = client.patch(
        f"/admin/accounts/{added.get_json()['id']}", data='{"label": "d2"}', headers=headers
    )
    assert patched.status_code == 200 and patched.get_json()["label"] == "d2"


def test_an_admin_body_that_is_not_json_names_its_content_type(redis_url: str) -> None:
    client = make_app(redis_url).test_client()
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/x-www-form-urlencoded"}
    answer = client.post("/admin/accounts", data="label=desk", headers=headers)
    assert answer.status_code == 400
    message = answer.get_json()["error"]["message"]
    assert "not valid JSON" in message and "application/x-www-form-urlencoded" in message


def test_admin_accounts_counts_as_the_admin_surface(redis_url: str) -> None:
    client = make_app(redis_url).test_client()
    assert client.get("/admin/accounts", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_requests_total{model="-",status="200",surface="admin"}' in text


@pytest.mark.parametrize("setting", ["UPSTREAM_COOKIES", "ADMIN_KEY", "COPILOT_ACCESS_TOKEN", "API_KEYS"])
def test_the_secret_key_hint_points_at_the_kept_key_never_a_new_one(setting: str) -> None:
    value = "sk-ab0123456789wxyz" if setting == "API_KEYS" else "value-0123456789abcdef"
    with pytest.raises(SettingsError) as raised:
        load_settings({setting: value})
    message = str(raised.value)
    assert "DATA_DIR/secret_key" in message and "deploy/admin" in message
    assert "generate" not in message and "token_urlsafe" not in message


def test_the_clis_use_the_launchers_redis_and_secret_only_when_none_is_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "redis_password").write_text("pw-123\n")
    (tmp_path / "secret_key").write_text("kept-secret-0123456789\n")
    write_redis_file(tmp_path, 6399)
    env = cli_environ({"DATA_DIR": str(tmp_path)}, "admin")
    assert env["REDIS_URL"] == "redis://:pw-123@127.0.0.1:6399/0"
    assert env["SECRET_KEY"] == "kept-secret-0123456789"
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "127.0.0.1:6399" in said and "pw-123" not in said
    mine = cli_environ({"DATA_DIR": str(tmp_path), "REDIS_URL": "redis://elsewhere:1/0"}, "admin")
    assert mine["REDIS_URL"] == "redis://elsewhere:1/0" and "SECRET_KEY" not in mine
    assert capsys.readouterr().err == ""


def _control_socket(port: str) -> str:
    code = "import runpy; print(runpy.run_path('deploy/gunicorn.conf.py')['control_socket'])"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "API_KEYS", "ADMIN_KEY"))}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**env, "PORT": port}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_each_gunicorn_master_has_its_own_control_socket() -> None:
    first, second = _control_socket("8000"), _control_socket("8000")
    assert first != second and first.endswith(".ctl") and len(first) < 100


def test_a_file_left_by_a_killed_launcher_is_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "redis_password").write_text("pw-123\n")
    path = write_redis_file(tmp_path, 6399)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": 2**22 + 1}))  # no such process
    env = cli_environ({"DATA_DIR": str(tmp_path)}, "admin")
    assert "REDIS_URL" not in env and capsys.readouterr().err == ""
