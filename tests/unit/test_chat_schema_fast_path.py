"""The Chat Completions schema's fast check (jsonschema-rs) is never looser than jsonschema.

`chat.parse._check_schema` lets a body through when jsonschema-rs calls it valid, and asks
jsonschema (the authority, which also names the field) about everything else. That is only
right if no body jsonschema refuses is one jsonschema-rs accepts: checked here on the fuzz
strategies' valid bodies, bodies with one bad field, arbitrary JSON in every field, and
the values the two libraries read differently (NaN, numbers beyond 64 bits).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from service.errors import InvalidRequest
from service.web.chat import parse
from tests.unit.fuzz_bodies import arbitrary_bodies, bodies_with_one_bad_field, valid_bodies

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fast_is_never_looser(body: dict[str, Any]) -> bool:
    """Whether jsonschema-rs passed `body` (only ever when jsonschema does)."""
    try:
        fast = parse._fast_validator().is_valid(body)
    except (ValueError, OverflowError):
        return False
    if fast:
        assert parse._validator().is_valid(body), body
    return fast


@FUZZ
@given(valid_bodies())
def test_valid_bodies_take_the_fast_way(body: dict[str, Any]) -> None:
    assert fast_is_never_looser(body)


@FUZZ
@given(bodies_with_one_bad_field())
def test_bodies_with_a_bad_field(case: tuple[dict[str, Any], str]) -> None:
    fast_is_never_looser(case[0])


@FUZZ
@given(arbitrary_bodies())
def test_arbitrary_bodies(body: dict[str, Any]) -> None:
    fast_is_never_looser(body)


BASE: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"max_tokens": 10**30},
        {"max_tokens": -(10**30)},
        {"seed": 2**64},
        {"n": 2**70},
        {"top_p": 10**400},
        {"vendor_extra": float("-inf")},
        {"logit_bias": {"12\n": 1}},  # Python's `$` matches before a final newline, Rust's does not
    ],
)
def test_values_read_differently_are_decided_by_jsonschema(extra: dict[str, Any]) -> None:
    body = {**BASE, **extra}
    fast_is_never_looser(body)
    try:
        parse._check_schema(body)
        accepted = True
    except InvalidRequest:
        accepted = False
    assert accepted == parse._validator().is_valid(body)


def test_a_refused_body_still_names_its_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse._check_schema({**BASE, "temperature": "hot"})
    assert caught.value.param == "temperature"
