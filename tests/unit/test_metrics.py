"""The worker's metric wrappers in-process: outcomes, error classes, queue wait, tokens, in-flight."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from service.runtime import metrics
from service.turns import TurnRequest
from workers.instrument import UpstreamTimer, job_metrics, publish_configured_accounts
from workers.upstream.errors import CaptchaRequired
from workers.upstream.events import Done, TextDelta


@dataclasses.dataclass
class EnqueuedJob:
    """What `job_metrics` reads from RQ's job: when the web tier enqueued it."""

    enqueued_at: datetime.datetime


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def turn() -> TurnRequest:
    return TurnRequest(
        completion_id="chatcmpl-x",
        conversation_id="conv_x",
        owner="o",
        model="Balanced",
        prompt="hello there",
    )


def test_outcomes_and_error_classes_are_counted() -> None:
    before = {
        "done": value("gateway_turns_total", outcome="done"),
        "error": value("gateway_turns_total", outcome="error"),
        "captcha": value("gateway_upstream_errors_total", error_class="CaptchaRequired"),
        "redis": value("gateway_redis_errors_total", tier="worker"),
        "waits": value("gateway_queue_wait_seconds_count"),
    }
    job = EnqueuedJob(datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=2))
    with job_metrics(job) as summary:
        assert value("gateway_turns_in_flight") >= 1
        summary["status"] = "done"
    with pytest.raises(CaptchaRequired), job_metrics(job):
        raise CaptchaRequired("solve it")
    with pytest.raises(RedisConnectionError), job_metrics(None):
        raise RedisConnectionError("down")
    assert value("gateway_turns_total", outcome="done") == before["done"] + 1
    assert value("gateway_turns_total", outcome="error") == before["error"] + 2
    assert value("gateway_upstream_errors_total", error_class="CaptchaRequired") == before["captcha"] + 1
    assert value("gateway_redis_errors_total", tier="worker") == before["redis"] + 1
    assert value("gateway_queue_wait_seconds_count") == before["waits"] + 2  # no job, no wait
    assert value("gateway_turns_in_flight") == 0


def test_the_upstream_timer_sees_the_first_token_and_counts_tokens() -> None:
    def upstream() -> Iterator[object]:
        assert value("gateway_upstream_account_in_flight", account="1") == 1
        yield TextDelta("Hi")
        yield TextDelta(" you")
        yield Done(text="Hi you", finish_reason="stop")

    firsts = value("gateway_upstream_first_token_seconds_count", dialect="bing")
    out = value("gateway_tokens_total", direction="out", model="Balanced")
    into = value("gateway_tokens_total", direction="in", model="Balanced")
    timer = UpstreamTimer("bing", turn(), "1")
    assert [type(e).__name__ for e in timer.watch(upstream())] == ["TextDelta", "TextDelta", "Done"]  # type: ignore[arg-type]
    assert value("gateway_upstream_first_token_seconds_count", dialect="bing") == firsts + 1
    assert value("gateway_tokens_total", direction="out", model="Balanced") == out + 2
    assert value("gateway_tokens_total", direction="in", model="Balanced") == into + 2
    assert value("gateway_upstream_account_in_flight", account="1") == 0


def test_configured_accounts_are_published_ready() -> None:
    publish_configured_accounts(2)
    assert value("gateway_upstream_account_state", account="1", state="ready") == 1
    metrics.set_account_states({"1": "cooling"})
    assert value("gateway_upstream_account_state", account="1", state="ready") == 0
    assert value("gateway_upstream_account_state", account="1", state="cooling") == 1
