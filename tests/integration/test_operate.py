"""Operating the real stack: metrics merged across gunicorn processes, a worker's metrics
port, readiness, and one request id followed through JSON logs of both tiers.

Its own gunicorn (two web processes) and worker on a queue of their own, on the stack's
redis-server and the session's simulator (ChatHub dialect), logs captured to files.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service.runtime.embedded_redis import EmbeddedRedis, free_port
from tests.integration.conftest import body
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env, wait_for

TURNS = 3
MODEL_LISTS = 30


@dataclasses.dataclass
class Ops:
    url: str
    worker_metrics: str
    metrics_dir: Path
    web_log: Path
    worker_log: Path


@pytest.fixture(scope="module")
def ops(
    stack_redis: EmbeddedRedis, simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ops]:
    """gunicorn with WEB_CONCURRENCY=2 and one worker with WORKER_METRICS_PORT, JSON logs."""
    root = tmp_path_factory.mktemp("ops")
    metrics_port = free_port()
    env = gateway_env(
        stack_redis.url,
        simulator.http_url,
        RQ_QUEUE="ops",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        WORKER_METRICS_PORT=str(metrics_port),
    )
    # gunicorn empties this directory at start; naming it lets the test see each process's file.
    metrics_dir = root / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an earlier run")
    web_env = dict(env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    web_log, worker_log = root / "web.log", root / "worker.log"
    logs: list[IO[bytes]] = [web_log.open("wb")]
    worker = WorkerProcess(env, stderr=worker_log)
    web = GunicornServer(web_env, workers=2, stderr=logs[0])
    try:
        worker.start()
        web.start()
        yield Ops(web.url, f"http://127.0.0.1:{metrics_port}/metrics", metrics_dir, web_log, worker_log)
    finally:
        web.stop()
        worker.stop()
        for log in logs:
            log.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and set(labels.items()) <= set(pairs)
    )


def test_metrics_add_up_across_web_processes_and_the_worker_serves_its_own(
    ops: Ops, sim: SimulatorProcess
) -> None:
    before_web = scrape(ops.url + "/metrics")
    before_worker = scrape(ops.worker_metrics)
    for index in range(TURNS):
        response = requests.post(
            ops.url + "/v1/chat/completions", json=body(f"metrics turn {index}"), timeout=60
        )
        assert response.status_code == 200, response.text
    for _ in range(MODEL_LISTS):  # a new connection each: both web processes take some
        with requests.Session() as session:
            assert session.get(ops.url + "/v1/models", timeout=10).status_code == 200

    # The earlier run's file was cleared at start; both web processes write files of their own …
    assert not (ops.metrics_dir / "counter_1.db").exists()
    pids = {re.sub(r"\D", "", path.name) for path in ops.metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, pids
    # … and /metrics (whichever process serves it) merges them exactly.
    web = scrape(ops.url + "/metrics")
    requests_total = "gateway_requests_total"
    completions = {"surface": "chat.completions", "model": "Balanced", "status": "200"}
    models = {"surface": "models", "model": "-", "status": "200"}
    assert (
        total(web, requests_total, **completions) - total(before_web, requests_total, **completions) == TURNS
    )
    assert total(web, requests_total, **models) - total(before_web, requests_total, **models) == MODEL_LISTS
    assert total(web, "gateway_requests_total", surface="other") == 0

    # The worker's own port: the turns it ran, timed, with tokens counted.
    worker = scrape(ops.worker_metrics)

    def delta(name: str, **labels: str) -> float:
        return total(worker, name, **labels) - total(before_worker, name, **labels)

    assert delta("gateway_turns_total", outcome="done") == TURNS
    assert delta("gateway_queue_wait_seconds_count") == TURNS
    assert delta("gateway_added_first_token_seconds_count", dialect="bing") == TURNS
    assert delta("gateway_upstream_first_token_seconds_count", dialect="bing") == TURNS
    assert delta("gateway_tokens_total", direction="in", model="Balanced") >= TURNS * 3
    assert delta("gateway_tokens_total", direction="out", model="Balanced") > 0
    assert total(worker, "gateway_turns_in_flight") == 0
    assert total(worker, "gateway_upstream_account_in_flight", account="0") == 0
    assert total(worker, "gateway_upstream_account_state", account="0", state="ready") == 1


def test_an_upstream_error_is_counted_by_class(ops: Ops, sim: SimulatorProcess) -> None:
    def throttled() -> float:
        return total(scrape(ops.worker_metrics), "gateway_upstream_errors_total", error_class="Throttled")

    before = throttled()
    response = requests.post(ops.url + "/v1/chat/completions", json=body("[sim:throttled] hi"), timeout=60)
    assert response.status_code == 429
    # The job's failure is recorded just after the client got its 429.
    wait_for(lambda: throttled() == before + 1)


def test_readyz_sees_the_worker(ops: Ops) -> None:
    response = requests.get(ops.url + "/readyz", timeout=10)
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["workers"]["ok"] and checks["workers"]["queue"] == "ops"
    assert checks["redis"] == {"ok": True}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a captured stderr (other output is skipped)."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_one_request_id_follows_a_turn_through_both_tiers(ops: Ops) -> None:
    request_id = "req-ops-trace-4711"
    response = requests.post(
        ops.url + "/v1/chat/completions",
        json=body("follow me"),
        headers={"x-request-id": request_id},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    conversation_id = response.headers["X-Conversation-Id"]
    completion_id = response.json()["id"]

    def mine(path: Path) -> list[dict[str, Any]]:
        return [line for line in json_lines(path) if line.get("request_id") == request_id]

    web = wait_for(lambda: mine(ops.web_log))
    worker = wait_for(lambda: mine(ops.worker_log))
    for line in web + worker:
        assert {"time", "level", "logger", "message"} <= set(line)
    assert any(line.get("event") == "completion_enqueued" for line in web)
    assert any(line["logger"].startswith("workers.") for line in worker)
    # The worker's lines carry the same completion and conversation ids as the web's.
    assert {line["conversation_id"] for line in worker} == {conversation_id}
    assert {line["job_id"] for line in worker} == {completion_id}
    assert any(line["conversation_id"] == conversation_id for line in web)
    # Structured means every line, gunicorn's and RQ's own included.
    for path in (ops.web_log, ops.worker_log):
        lines = [raw for raw in path.read_text(errors="replace").splitlines() if raw.strip()]
        assert lines and all(raw.startswith("{") for raw in lines), path.name
