"""A turn's hold on the pool in the worker (`workers.account_pool.AccountLane`), against real Redis."""

from __future__ import annotations

import pytest
from redis import Redis

from service.errors import RateLimited, UpstreamUnavailable
from service.runtime.settings import Settings
from service.state.relay_publisher import Publisher
from workers.account_pool import AccountLane, Pool
from workers.upstream.errors import CaptchaRequired, Interrupted, Throttled

KEY = "k" * 32


def lane(redis: Redis, **settings: object) -> AccountLane:
    pool = Pool(Settings(queue_name="lane", secret_key=KEY, **settings), redis)  # type: ignore[arg-type]
    return AccountLane(pool, "owner", Publisher(redis, "chatcmpl-lane"), lambda: False)


def test_account_failures_move_the_turn_and_park_the_account(redis_client: Redis) -> None:
    turn = lane(redis_client, upstream_cookies=("_U=one", "_U=two"))
    turn.pool.seed()
    first = turn.take(None)
    assert first is not None and first.cookies == "_U=one"
    assert not turn.fail_over(Interrupted("the socket dropped"))  # the turn's problem, not the account's
    assert turn.fail_over(CaptchaRequired("solve it"))
    second = turn.take(None)
    assert second is not None and second.id == "env-2"
    assert turn.fail_over(Throttled("slow down", retry_after=30))
    with pytest.raises(RateLimited) as waiting:  # one cooling, one parked: coming back later helps
        turn.take(None)
    assert 29 <= (waiting.value.retry_after or 0) <= 30
    turn.release()


def test_with_health_off_account_errors_pass_through(redis_client: Redis) -> None:
    turn = lane(redis_client, account_health=False)
    turn.pool.seed()
    assert turn.take(None) is not None
    assert not turn.fail_over(CaptchaRequired("solve it"))
    assert turn.pool.registry.get("env-1").state(0) == "ready"


def test_secrets_sealed_under_another_secret_key_are_an_operator_problem(redis_client: Redis) -> None:
    Pool(Settings(queue_name="lane", secret_key="z" * 32), redis_client).registry.add(
        cookies="_U=x", account_id="acc-old"
    )
    with pytest.raises(UpstreamUnavailable, match="another SECRET_KEY"):
        lane(redis_client).take(None)
