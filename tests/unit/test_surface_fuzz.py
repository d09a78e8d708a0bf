"""Derandomized fuzz of every surface with hostile values (`test_request_fuzz` adds a finer one of Chat).

Chat Completions, Responses, Messages, count_tokens, Conversations (create, update, the items listing's
query), images and the four admin routes get mutated valid bodies (`fuzz_surfaces`)
and the raw malformed ones, against the real app on a real Redis. No body may get a
5xx, every error is the surface's error JSON, and every 400 for a JSON object names the
field (OpenAI's `param`; Anthropic's shape has none, so its message quotes the field).

Turn surfaces run as a managed key allowed only a model that does not exist: a body
that passes every check then ends in the quick 403 `model_not_found` of the key's
admission instead of a turn (which would need a worker). Figures per surface are printed
at the end (`pytest -s`): bodies sent, 5xx seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.web import create_app
from service.web.pipeline.request import PARSE_ERROR, TOO_DEEP
from tests.unit.fuzz_surfaces import LONE, RAW_BODIES, SURFACES, Surface, encode, mutated

ADMIN = "fuzz-admin-key-0123456789abcdef0123"
EXAMPLES = 120
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    max_examples=EXAMPLES,
)
STATS: dict[str, list[int]] = {}
NAMED = re.compile(
    r"'[^']+'|`[^`]+`|\b[a-z_]+(\.[a-z_0-9\[\]]+)+\b|\b(messages|system|tools|model|max_tokens)\b"
)
BODY_LEVEL = (PARSE_ERROR, TOO_DEEP, "must be a JSON object", "Nothing to change")


@pytest.fixture(scope="module")
def gateway(redis_server: Any) -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    app = create_app(
        {
            "REDIS_URL": redis_server.url,
            "UPSTREAM": "copilot",
            "ADMIN_KEY": ADMIN,
            "SECRET_KEY": "f" * 40,
            "QUEUE_WAIT_TIMEOUT": "1",
            "LOG_LEVEL": "CRITICAL",
        }
    )
    client = app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = client.post("/admin/keys", json={"label": "fuzz", "models": ["no-such-model"]}, headers=admin)
    assert key.status_code in (200, 201), key.get_data(as_text=True)
    caller = {"Authorization": f"Bearer {key.get_json()['key']}"}
    conversation = client.post("/v1/conversations", json={}, headers=caller).get_json()["id"]
    account = client.post("/admin/accounts", json={"label": "fuzz", "enabled": False}, headers=admin)
    ids = {
        "conversation": conversation,
        "key": key.get_json()["id"],
        "account": account.get_json()["id"],
        "caller": caller["Authorization"],
        "admin": admin["Authorization"],
    }
    yield client, ids


def send(gateway: tuple[FlaskClient, dict[str, str]], surface: Surface, data: bytes) -> Any:
    client, ids = gateway
    path = surface.path.format(**ids)
    token = ids["admin"] if surface.path.startswith("/admin/") else ids["caller"]
    headers = {"Authorization": token, "Content-Type": "application/json"}
    return client.open(path, method=surface.method, data=data, headers=headers)


def check(surface: Surface, response: Any, body: Any) -> None:
    """No 5xx; the surface's error JSON; a 400 for a JSON object names its field."""
    counts = STATS.setdefault(surface.name, [0, 0])
    counts[0] += 1
    if response.status_code >= 500:
        counts[1] += 1
    text = response.get_data(as_text=True)
    assert response.status_code < 500, (surface.name, body, text)
    if response.status_code < 400:
        return
    payload = response.get_json()
    error = payload["error"]
    assert isinstance(error["message"], str) and error["message"], text
    if surface.openai:
        assert set(error) == {"message", "type", "param", "code"}, text
    else:
        assert payload["type"] == "error" and set(error) == {"type", "message"}, text
    if response.status_code != 400 or not isinstance(body, dict) or not body:
        return
    if any(part in error["message"] for part in BODY_LEVEL):
        return
    if surface.openai:
        assert error["param"] is not None, (surface.name, body, text)
    else:
        assert NAMED.search(error["message"]), (surface.name, body, text)


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_mutated_bodies_are_never_a_5xx_and_400s_name_the_field(
    gateway: tuple[FlaskClient, dict[str, str]], surface: Surface
) -> None:
    @FUZZ
    @given(mutated(surface))
    def run(body: dict[str, Any]) -> None:
        check(surface, send(gateway, surface, encode(body)), body)

    run()


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_raw_malformed_bodies_are_never_a_5xx(
    gateway: tuple[FlaskClient, dict[str, str]], surface: Surface
) -> None:
    for data in RAW_BODIES:
        check(surface, send(gateway, surface, data), data)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["limit", "order", "after", "include"]),
        st.text(max_size=8) | st.integers(-(10**30), 10**30).map(str) | st.just(LONE),
        max_size=3,
    )
)
def test_the_items_listing_query_is_never_a_5xx(
    gateway: tuple[FlaskClient, dict[str, str]], query: dict[str, str]
) -> None:
    client, ids = gateway
    encoded = "&".join(f"{k}={quote(v, errors='surrogatepass')}" for k, v in query.items())
    response = client.get(
        f"/v1/conversations/{ids['conversation']}/items?{encoded}", headers={"Authorization": ids["caller"]}
    )
    check(Surface("conversations.items", "GET", "", {}), response, query)


def test_report(capsys: pytest.CaptureFixture[str]) -> None:
    """The figures: bodies and 5xx per surface (shown with `pytest -s`)."""
    with capsys.disabled():
        print("\nsurface fuzz: surface, bodies, 5xx")
        for name, (bodies, errors) in sorted(STATS.items()):
            print(f"  {name:24} {bodies:5d} {errors:3d}")
    assert all(errors == 0 for _, errors in STATS.values())
