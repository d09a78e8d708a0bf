"""Worker-side pieces against a Redis that is not there: they wait or fail, never spin or hide it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from service.runtime.embedded_redis import EmbeddedRedis, free_port
from service.runtime.settings import load_settings
from service.state.relay_publisher import Publisher
from service.turns import TurnRequest, lease_key
from workers.context import WorkerContext
from workers.turn import TurnRunner


def runner(redis_url: str) -> TurnRunner:
    settings = load_settings({"REDIS_URL": redis_url, "WORKER_LEASE_SECONDS": "3"})
    redis = Redis.from_url(redis_url, socket_connect_timeout=1)
    request = TurnRequest(
        completion_id="chatcmpl-watch", conversation_id="conv_watch", owner="o", model="Balanced", prompt="hi"
    )
    return TurnRunner(WorkerContext(settings=settings, redis=redis), request)


def watch_for(turn: TurnRunner, seconds: float) -> None:
    thread = threading.Thread(target=turn.watcher.run, daemon=True)
    thread.start()
    time.sleep(seconds)
    turn.watcher.stopped.set()
    thread.join(5)
    assert not thread.is_alive()


def test_redis_down_at_turn_start_is_one_warning_not_a_spin(caplog: pytest.LogCaptureFixture) -> None:
    turn = runner(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there: connection refused
    attempts = 0
    execute = turn.redis.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Pipeline:
        nonlocal attempts
        attempts += 1
        return execute(*args, **kwargs)

    turn.redis.pipeline = counting_pipeline  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="workers.lease_watch"):
        watch_for(turn, 2.0)
    warnings = [r for r in caplog.records if "turn_watch_failed" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None  # a line, not a traceback
    assert attempts <= 8  # backoff 0.6, 1.2, 2 s…: a handful of tries, not thousands


def test_the_watcher_keeps_the_lease_when_redis_is_there(redis_client: Redis, redis_url: str) -> None:
    turn = runner(redis_url)
    watch_for(turn, 0.5)
    assert redis_client.ttl(lease_key("chatcmpl-watch")) > 0


def test_a_publish_lost_on_the_coalescing_timer_fails_the_next_publish() -> None:
    server = EmbeddedRedis().start()
    try:
        redis = Redis.from_url(server.url, socket_connect_timeout=1)
        publisher = Publisher(redis, "chatcmpl-lost", coalesce_ms=300)
        publisher.delta("first ")  # sent at once
        server.stop()
        publisher.delta("second ")  # held for the window, then flushed from a timer: fails there
        time.sleep(0.6)
        server = EmbeddedRedis(port=server.port).start()  # a blip: Redis is back
        with pytest.raises(RedisConnectionError):
            publisher.delta("third")  # the turn learns of the lost text instead of streaming on
    finally:
        server.stop()
