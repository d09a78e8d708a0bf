"""Liveness, readiness and /metrics of the web app, over a real Redis and real RQ workers' registry."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from service.accounts import health, manage
from service.accounts.registry import Registry
from service.accounts.scheduler import pool_unavailable
from service.runtime.embedded_redis import free_port
from service.web import create_app
from service.web.http.health import WORKER_HEARTBEAT_MAX_AGE, check_workers

KEY = "sk-ab0123456789wxyz"


def make_app(redis_url: str, **overrides: str) -> Flask:
    settings = {
        "REDIS_URL": redis_url,
        "UPSTREAM": "bing",
        "API_KEYS": KEY,
        "SECRET_KEY": "test-secret-key-0123456789",  # keys need one (security defaults)
        "RQ_QUEUE": "chat",
        **overrides,
    }
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def worker(redis_client: Redis) -> Iterator[SimpleWorker]:
    """A real RQ worker registered on the `chat` queue, as `python -m workers` registers."""
    queue = Queue("chat", connection=redis_client, serializer=JSONSerializer)
    registered = SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer)
    registered.register_birth()
    registered.heartbeat()
    yield registered
    registered.register_death()


def test_healthz_is_liveness_only_and_needs_no_key(redis_url: str) -> None:
    # Redis is unreachable, yet the process is alive: liveness must not restart it.
    app = make_app(f"redis://127.0.0.1:{free_port()}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"process": {"ok": True}}}


def seeded(app: Flask) -> Registry:
    """The app's account registry, seeded from its settings as a worker seeds it at start-up."""
    registry: Registry = app.extensions["accounts"]
    settings = app.extensions["gateway"].settings
    registry.seed(settings.upstream_cookies, access_token=settings.copilot_access_token)
    return registry


def test_readyz_is_ok_with_redis_a_live_worker_and_an_account(redis_url: str, worker: SimpleWorker) -> None:
    app = make_app(redis_url)
    seeded(app)
    response = app.test_client().get("/readyz")  # no API key sent
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["redis"] == {"ok": True}
    assert body["checks"]["workers"] == {"ok": True, "queue": "chat", "live": 1, "registered": 1}
    assert body["checks"]["accounts"] == {"ok": True, "ready": 1, "states": {"env-1": "ready"}}


def test_readyz_counts_the_pools_accounts(redis_url: str, worker: SimpleWorker) -> None:
    app = make_app(redis_url, UPSTREAM_COOKIES="_U=a\n_U=b")
    seeded(app)
    accounts = app.test_client().get("/readyz").get_json()["checks"]["accounts"]
    assert accounts == {"ok": True, "ready": 2, "states": {"env-1": "ready", "env-2": "ready"}}


def test_readyz_fails_while_every_account_needs_attention_is_unreachable_or_disabled(
    redis_url: str, worker: SimpleWorker
) -> None:
    # Issue #17 item 8: readiness used to count configured accounts, whatever their state.
    app = make_app(redis_url, UPSTREAM_COOKIES="_U=a\n_U=b\n_U=c")
    registry = seeded(app)
    now = time.time()
    health.record(registry, "env-1", health.Verdict("attention", "upstream_captcha_required", "CAPTCHA"), now)
    registry.update("env-2", enabled=False)
    assert app.test_client().get("/readyz").status_code == 200  # env-3 still serves
    failure = health.Verdict("unreachable", "upstream_unreachable", "the upstream refused the connection")
    marked = [
        health.connection_failed(registry, "env-3", failure, now) for _ in range(health.UNREACHABLE_AFTER)
    ]
    assert marked == [False] * (health.UNREACHABLE_AFTER - 1) + [True]
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    accounts = response.get_json()["checks"]["accounts"]
    assert accounts == {
        "ok": False,
        "ready": 0,
        "states": {"env-1": "needs_attention", "env-2": "disabled", "env-3": "unreachable"},
    }
    # The admin listing and the 503 a turn gets say the same.
    listed = {a["id"]: a["state"] for a in manage.views(registry, registry.all(fresh=True))}
    assert listed == accounts["states"]
    message = str(pool_unavailable(registry.all(fresh=True), now))
    assert "env-1 (no label) is needs_attention: CAPTCHA" in message
    assert "UPSTREAM_COOKIES (line 1)" in message
    assert "env-3 (no label) is unreachable" in message and "3 times in a row" in message


def test_the_503_names_upstream_cookies_only_for_seeded_accounts(redis_url: str) -> None:
    app = make_app(redis_url)
    registry = seeded(app)
    added = registry.add(cookies="_U=x", label="desk")
    registry.update("env-1", enabled=False)
    health.record(
        registry, added.id, health.Verdict("attention", "upstream_unauthorized", "401"), time.time()
    )
    message = str(pool_unavailable(registry.all(fresh=True), time.time()))
    assert f"PATCH /admin/accounts/{added.id}" in message
    assert "UPSTREAM_COOKIES" not in message


def test_readyz_fails_without_a_worker_on_the_queue(redis_url: str, worker: SimpleWorker) -> None:
    # The worker serves `chat`; this app enqueues on `other`.
    response = make_app(redis_url, RQ_QUEUE="other").test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "fail"
    assert body["checks"]["workers"] == {"ok": False, "queue": "other", "live": 0, "registered": 0}
    assert body["checks"]["redis"]["ok"] is True


def test_a_silent_worker_is_not_live(redis_client: Redis, worker: SimpleWorker) -> None:
    queue = Queue("chat", connection=redis_client, serializer=JSONSerializer)
    assert check_workers(queue)["live"] == 1
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=WORKER_HEARTBEAT_MAX_AGE + 1)
    assert check_workers(queue, now=later) == {"ok": False, "queue": "chat", "live": 0, "registered": 1}


def test_readyz_is_503_naming_redis_when_redis_is_down(redis_url: str) -> None:
    response = make_app(f"redis://127.0.0.1:{free_port()}").test_client().get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["redis"] == {"ok": False, "error": "ConnectionError"}
    assert checks["workers"] == {"ok": False, "skipped": "redis unreachable"}


def test_metrics_are_open_and_count_requests(redis_url: str) -> None:
    client = make_app(redis_url).test_client()
    headers = {"Authorization": f"Bearer {KEY}"}
    # The registry is the process's: other tests' requests are in it too, so compare before/after.
    before = client.get("/metrics").get_data(as_text=True)
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert client.get("/v1/models").status_code == 401
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert 'gateway_requests_total{model="-",status="200",surface="models"}' in text
    assert 'gateway_requests_total{model="-",status="401",surface="models"}' in text
    assert "/healthz" not in text
    others = [line for line in text.splitlines() if 'surface="other"' in line]
    assert others == [line for line in before.splitlines() if 'surface="other"' in line]


@pytest.mark.parametrize(
    ("path", "surface"),
    [
        ("/v1/chat/completions", "chat.completions"),
        ("/openai/deployments/x/chat/completions", "chat.completions"),
        ("/v1/responses", "responses"),
        ("/v1/messages", "messages"),
        ("/v1/models/gpt-4", "models"),
        ("/v1/conversations/conv_1", "conversations"),
        ("/v1/whatever/else/entirely", "other"),
        ("/admin/accounts", "admin"),
        ("/admin/accounts/env-1", "admin"),
        ("/admin/keys", "admin"),
        ("/v1/completions", "completions"),
        ("/completions", "completions"),
    ],
)
def test_surface_labels_are_bounded(path: str, surface: str) -> None:
    from service.web.http.telemetry import surface_of

    assert surface_of(path) == surface
