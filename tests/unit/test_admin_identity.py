"""The admin contract for identities: `curl` / `har` / `proxy` on POST and PATCH, and the CLI's --from-curl.

The Flask app over a real Redis (no worker needed: importing an identity touches no upstream).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from service import admin as cli
from service.accounts.registry import Registry
from service.web import create_app

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
ADMIN = "admin-key-identity-0123456789"
SECRET = "test-secret-key-0123456789"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def environ(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "UPSTREAM": "copilot",
        "COPILOT_URL": "https://copilot.microsoft.com",
        "SECRET_KEY": SECRET,
        "ADMIN_KEY": ADMIN,
        "RQ_QUEUE": "chat-admin-identity",
    }


@pytest.fixture()
def client(redis_url: str) -> Iterator[FlaskClient]:
    app = create_app(environ(redis_url))
    yield app.test_client()


def post(client: FlaskClient, payload: Any) -> Any:
    return client.post("/admin/accounts", json=payload, headers=HEADERS)


def test_post_a_curl_copy_stores_cookies_and_identity_and_answers_with_it(
    client: FlaskClient, redis_client: Redis
) -> None:
    created = post(client, {"curl": (CAPTURES / "chrome_cmd.txt").read_text(), "label": "desk", "rpm": 5})
    assert created.status_code == 201, created.get_data(as_text=True)
    view = created.get_json()
    assert view["warnings"] == [] and (view["label"], view["rpm"]) == ("desk", 5)
    assert (view["user_agent"], view["impersonate"], view["has_proxy"]) == ("chrome 146", "chrome146", False)
    assert view["client_hints"] == ["sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform"]
    assert "FAKE" not in created.get_data(as_text=True)
    registry = Registry(redis_client, namespace="chat-admin-identity", secret_key=SECRET)
    account = registry.get(view["id"])
    assert registry.cookies(account).startswith("MUID=FAKE0MUID") and "cf_clearance=" in registry.cookies(
        account
    )
    assert account.identity().impersonate == "chrome146"


def test_patch_a_har_with_a_proxy_refreshes_the_identity_and_never_shows_the_proxy(
    client: FlaskClient,
) -> None:
    account_id = post(client, {"cookies": "_U=old"}).get_json()["id"]
    har = (CAPTURES / "chrome.har").read_text()
    patched = client.patch(
        f"/admin/accounts/{account_id}",
        json={"har": json.loads(har), "proxy": "socks5://op:proxy-secret@10.1.2.3:1080"},
        headers=HEADERS,
    )
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert patched.get_json()["has_proxy"] is True and patched.get_json()["impersonate"] == "chrome146"
    listing = client.get("/admin/accounts", headers=HEADERS).get_data(as_text=True)
    assert "proxy-secret" not in listing and "10.1.2.3" not in listing


def test_an_inconsistent_capture_is_a_400_naming_the_field_and_the_problem(client: FlaskClient) -> None:
    refused = post(client, {"curl": (CAPTURES / "inconsistent_bash.txt").read_text()})
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["param"] == "curl" and "Firefox never sends them" in error["message"]
    both = post(client, {"curl": "curl 'https://copilot.microsoft.com/'", "cookies": "_U=x"})
    assert both.status_code == 400 and both.get_json()["error"]["param"] == "curl"


def test_an_account_without_a_capture_shows_the_default_identity(client: FlaskClient) -> None:
    view = post(client, {"cookies": "_U=plain"}).get_json()
    assert view["impersonate"].startswith("chrome") and view["user_agent"].startswith("chrome ")
    assert view["warnings"] == [] and view["has_proxy"] is False


def test_the_cli_imports_a_curl_copy_from_stdin(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((CAPTURES / "firefox_cmd.txt").read_text()))
    assert cli.run(["add", "--from-curl", "-", "--label", "ff"], environ(redis_url)) == 0
    view = json.loads(capsys.readouterr().out)
    assert (view["user_agent"], view["impersonate"], view["label"]) == ("firefox 147", "firefox147", "ff")
    account_id = view["id"]
    monkeypatch.setattr("sys.stdin", io.StringIO((CAPTURES / "chrome_bash.txt").read_text()))
    assert cli.run(["refresh", account_id, "--from-curl", "-"], environ(redis_url)) == 0
    assert json.loads(capsys.readouterr().out)["impersonate"] == "chrome146"
    monkeypatch.setattr("sys.stdin", io.StringIO((CAPTURES / "inconsistent_bash.txt").read_text()))
    assert cli.run(["refresh", account_id, "--from-curl", "-"], environ(redis_url)) == 1
    assert "Firefox never sends them" in capsys.readouterr().err
