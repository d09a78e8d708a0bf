"""Property-based fuzzing of the Chat Completions body against the real app on a real Redis.

Three families, 10,000 bodies in all, derandomized (the same bodies on every run) and
bounded: valid bodies must be accepted, bodies with one bad field must be a 400 naming
that field, and bodies with arbitrary JSON anywhere must never be a 5xx. Every error is
OpenAI's error JSON.

Valid bodies continue a conversation id that does not exist, so each one runs the whole
validation and a real Redis lookup and ends in a quick 404 `conversation_not_found`
instead of a turn (which would need a worker per body); the full turn path for valid
bodies is exercised by the integration suite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings

from service.web import create_app
from tests.unit.fuzz_bodies import arbitrary_bodies, bodies_with_one_bad_field, valid_bodies

MISSING = "conv_fuzz_missing"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.fixture()
def client(redis_url: str) -> Iterator[FlaskClient]:
    app = create_app(
        {
            "REDIS_URL": redis_url,
            "UPSTREAM": "bing",
            "API_KEYS": "",
            "QUEUE_WAIT_TIMEOUT": "1",
            "LOG_LEVEL": "ERROR",
        }
    )
    yield app.test_client()


def error_of(response: Any) -> dict[str, Any]:
    """The OpenAI error object of a non-2xx response; fails on anything else."""
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    return dict(error)


def root(param: str) -> str:
    """The body field a param is inside: `messages[2].content[0].type` → `messages`."""
    return re.split(r"[.\[]", param, maxsplit=1)[0]


def post(client: FlaskClient, body: dict[str, Any]) -> Any:
    body.setdefault("conversation_id", MISSING)
    return client.post("/v1/chat/completions", json=body)


# 10,000 bodies take about 80 s of CPU: more than pytest's default timeout of wall time on a
# machine whose two cores are shared.
@pytest.mark.timeout(600)
def test_valid_bodies_are_accepted(client: FlaskClient) -> None:
    @settings(FUZZ, max_examples=2500)
    @given(valid_bodies())
    def check(body: dict[str, Any]) -> None:
        response = post(client, body)
        error = error_of(response)
        assert (response.status_code, error["code"], error["param"]) == (
            404,
            "conversation_not_found",
            "conversation_id",
        ), error

    check()


@pytest.mark.timeout(600)
def test_one_bad_field_is_a_400_naming_it(client: FlaskClient) -> None:
    @settings(FUZZ, max_examples=5000)
    @given(bodies_with_one_bad_field())
    def check(case: tuple[dict[str, Any], str]) -> None:
        body, bad = case
        response = post(client, body)
        error = error_of(response)
        assert response.status_code == 400, error
        assert error["param"] is not None and root(error["param"]) == bad, (bad, error)

    check()


@pytest.mark.timeout(600)
def test_arbitrary_json_anywhere_is_never_a_5xx(client: FlaskClient) -> None:
    @settings(FUZZ, max_examples=2500)
    @given(arbitrary_bodies())
    def check(body: dict[str, Any]) -> None:
        response = post(client, body)
        error = error_of(response)
        assert response.status_code in (400, 404), error
        assert error["param"] is not None, error
        assert root(error["param"]) in body, error

    check()
