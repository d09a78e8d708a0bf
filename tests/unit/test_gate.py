"""The web tier's one round trip (`service.web.pipeline.gate`) in the Flask app over a real Redis,
no worker: a turn the door or the key's quota refuses leaves nothing in RQ, and an admitted one
is an ordinary RQ job with its grant hint."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from service.accounts.registry import Registry
from service.turns import grant_hint_key
from service.web import create_app
from tests.support.stack import wait_for
from tests.unit.test_web_app import CHAT, SECRET

KEY = "sk-gate-0123456789abcdef"
QUEUE = "gate-test"


def gate_client(
    redis_url: str, redis_client: Redis, *, queue: str, key: str, rpm: int, wait: int
) -> FlaskClient:
    """An app with one account (four turns at once), `key` allowed `rpm` requests a minute, no worker."""
    Registry(redis_client, namespace=queue, secret_key=SECRET).seed(["_U=x"])
    app = create_app(
        {
            "REDIS_URL": redis_url,
            "UPSTREAM": "copilot",
            "SECRET_KEY": SECRET,
            "RQ_QUEUE": queue,
            "API_KEYS": key,
            "KEY_DEFAULT_RPM": str(rpm),
            "ACCOUNT_MAX_CONCURRENT": "4",
            "ACCOUNT_RPM": "60",
            "QUEUE_MAX_WAIT_SECONDS": "5",
            "QUEUE_WAIT_TIMEOUT": str(wait),
        }
    )
    return app.test_client()


@pytest.fixture()
def client(redis_url: str, redis_client: Redis) -> FlaskClient:
    """One account (four turns at once), a key allowed two requests a minute."""
    return gate_client(redis_url, redis_client, queue=QUEUE, key=KEY, rpm=2, wait=2)


def _post(client: FlaskClient) -> tuple[int, str]:
    answer = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"})
    return answer.status_code, answer.get_data(as_text=True)


@contextlib.contextmanager
def _in_flight(client: FlaskClient, redis: Redis, count: int) -> Iterator[list[str]]:
    """`count` turns sent and waiting for a worker (there is none): their queued job ids."""
    threads = [threading.Thread(target=_post, args=(client,)) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        queue = Queue(QUEUE, connection=redis)
        yield wait_for(lambda: (lambda ids: ids if len(ids) == count else None)(queue.job_ids))
    finally:
        for thread in threads:
            thread.join(10)


def test_an_admitted_turn_is_an_ordinary_rq_job_with_its_grant_hint(
    client: FlaskClient, redis_client: Redis
) -> None:
    with _in_flight(client, redis_client, 1) as (job_id,):
        job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.QUEUED and job.func_name == "workers.jobs.run_turn"
        assert redis_client.hget(grant_hint_key(job_id), "group") == b"default"


def test_a_turn_the_door_refuses_leaves_nothing_queued_and_costs_no_request(
    client: FlaskClient, redis_client: Redis
) -> None:
    now = time.time()
    prefix = Registry(redis_client, namespace=QUEUE, secret_key=SECRET).prefix
    redis_client.zadd(f"{prefix}:leases:env-1", {f"busy-{n}": now + 600 for n in range(4)})
    redis_client.lpush(f"{prefix}:durations", 600)  # and a turn takes ten minutes: none starts soon
    status, text = _post(client)
    assert status == 429 and "Every upstream account is busy" in text
    assert Queue(QUEUE, connection=redis_client).job_ids == []
    assert not redis_client.keys("turn:grant:*")
    assert not [k for k in redis_client.keys("ratelimit:*:requests") if redis_client.zcard(k)]


def test_a_turn_the_key_refuses_leaves_nothing_queued(client: FlaskClient, redis_client: Redis) -> None:
    with _in_flight(client, redis_client, 2):  # the key's two requests this minute, queued
        status, text = _post(client)
        assert status == 429 and "rate limit" in text.lower()
        assert len(Queue(QUEUE, connection=redis_client).job_ids) == 2
