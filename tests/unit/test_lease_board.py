"""The worker's one lease board (`workers.lease_watch._Board`) against a real Redis.

Every watching turn of a process is served in one pipeline per round: each turn's lease is
kept, each turn's cancel flag reaches only that turn, a stopped turn leaves the board, and
a board with no turns left ends and is started again by the next one.
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.runtime.settings import load_settings
from service.turns import TurnRequest, cancel_key, lease_key
from tests.support.stack import wait_for
from workers.context import WorkerContext
from workers.lease_watch import _BOARD, CANCEL_POLL_SECONDS
from workers.turn import TurnRunner


def runners(redis: Redis, redis_url: str, count: int) -> list[TurnRunner]:
    settings = load_settings({"REDIS_URL": redis_url, "WORKER_LEASE_SECONDS": "3"})
    return [
        TurnRunner(
            WorkerContext(settings=settings, redis=redis),
            TurnRequest(
                completion_id=f"chatcmpl-board{i}",
                conversation_id=f"conv_b{i}",
                owner="o",
                model="Balanced",
                prompt="hi",
            ),
        )
        for i in range(count)
    ]


def test_every_turn_is_watched_in_one_pipeline_a_round(redis_client: Redis, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    pipelines = 0
    make = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Pipeline:
        nonlocal pipelines
        pipelines += 1
        return make(*args, **kwargs)

    redis.pipeline = counting  # type: ignore[method-assign]
    turns = runners(redis, redis_url, 5)
    for turn in turns:
        turn.watcher.watch()
    assert wait_for(lambda: all(redis_client.ttl(lease_key(t.request.completion_id)) > 0 for t in turns))
    started, before = time.monotonic(), pipelines
    time.sleep(1.0)
    rounds = (time.monotonic() - started) / CANCEL_POLL_SECONDS
    assert pipelines - before <= rounds + 1  # one round trip a round for all five, not five

    redis_client.set(cancel_key(turns[2].request.completion_id), b"1")
    assert wait_for(lambda: turns[2].watcher.cancelled.is_set())
    time.sleep(2 * CANCEL_POLL_SECONDS)
    assert [t.watcher.cancelled.is_set() for t in turns] == [False, False, True, False, False]

    for turn in turns:
        turn.watcher.stopped.set()
    assert wait_for(lambda: not _BOARD._running)  # nothing left to watch: the board ends
    again = runners(redis, redis_url, 1)[0]
    again.watcher.watch()  # and the next turn starts it again
    assert wait_for(lambda: redis_client.ttl(lease_key(again.request.completion_id)) > 0)
    redis_client.set(cancel_key(again.request.completion_id), b"1")
    assert wait_for(lambda: again.watcher.cancelled.is_set())
