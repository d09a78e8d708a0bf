"""A spare conversation is made in the account's upstream session as it is after the turn.

An anonymous Copilot account (no cookies) gets its session from its first turn, which the
turn stores for every worker (`Pool.cookie_sink`). The spare created after that turn used
to be made with the credentials the turn began with, so it started a second anonymous
session and stored its cookies over the first: the first conversation then belonged to a
session the account no longer had, and continuing it was refused (`invalid-event`) and
rolled over to a new upstream conversation seeded with the transcript.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from tests.support.stack import gateway_env, served, wait_for

SPARE_KEY = "accounts:chat:spare:env-1"


@pytest.fixture()
def anonymous_stack(sim: SimulatorProcess) -> Iterator[tuple[str, Redis]]:
    """A copilot stack whose one account is anonymous, with spare conversations on."""
    with EmbeddedRedis() as server:
        env = gateway_env(
            server.url,
            sim.http_url,
            UPSTREAM="copilot",
            UPSTREAM_COOKIES="",
            UPSTREAM_SPARE_CONVERSATIONS="1",
        )
        with served(env) as stack:
            yield stack


def _answer(url: str, messages: list[dict[str, str]]) -> str:
    body: dict[str, Any] = {"model": "copilot", "messages": messages}
    answer = requests.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["message"]["content"])


def test_the_spare_after_an_anonymous_accounts_first_turn_keeps_its_session(
    anonymous_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    url, redis = anonymous_stack
    question = {"role": "user", "content": "Hi! What can you do?"}
    reply = _answer(url, [question])
    assert reply.endswith("This is turn 1.")
    wait_for(lambda: redis.get(SPARE_KEY))  # made after the turn, in the background
    following = _answer(
        url, [question, {"role": "assistant", "content": reply}, {"role": "user", "content": "More"}]
    )
    assert following.endswith("This is turn 2."), following  # the same upstream conversation, continued
