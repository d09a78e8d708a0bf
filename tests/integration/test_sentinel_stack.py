"""The whole gateway on Redis Sentinel, on loopback: gunicorn and a worker ride out a failover.

The web tier, the worker, RQ, the relay's pub/sub and `/readyz` all find Redis through
three real Sentinels only (no `REDIS_URL`); the primary is SIGKILLed and, once the
Sentinels promote the replica, turns succeed again from the same processes. (The
multi-host test does the same across separate hosts under load, as root.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from service.runtime.embedded_redis import free_port
from tests.integration.conftest import body
from tests.support.sentinel import MASTER, SentinelCluster
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env

pytestmark = [pytest.mark.slow]

LOOPBACK = "127.0.0.1"


@pytest.fixture()
def ha() -> Iterator[SentinelCluster]:
    ports = [free_port() for _ in range(5)]
    cluster = SentinelCluster(
        (LOOPBACK, ports[0]), (LOOPBACK, ports[1]), [(LOOPBACK, port) for port in ports[2:]]
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_web_and_worker_follow_a_failover_without_restart(
    ha: SentinelCluster, simulator: SimulatorProcess
) -> None:
    env = gateway_env("", simulator.http_url, RQ_QUEUE="chat-sentinel")
    del env["REDIS_URL"]
    env.update(
        REDIS_SENTINELS=",".join(f"{host}:{port}" for host, port in (n.address for n in ha.sentinels)),
        REDIS_SENTINEL_MASTER=MASTER,
    )
    web = GunicornServer(env)
    worker = WorkerProcess(env, registry_url=f"redis://{LOOPBACK}:{ha.primary.port}/0")
    try:
        worker.start()
        web.start()
        before = requests.post(f"{web.url}/v1/chat/completions", json=body("before"), timeout=60)
        assert before.status_code == 200, before.text
        conversation_id = before.headers["X-Conversation-Id"]

        ha.primary.kill()
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = requests.post(
                f"{web.url}/v1/chat/completions",
                json=body("after", conversation_id=conversation_id),
                timeout=60,
            )
            statuses.append(after.status_code)
            if after.status_code == 200:
                break
            assert after.status_code == 503, after.text  # visible and retryable while Redis moves
            assert after.json()["error"]["code"] == "service_unavailable"
            time.sleep(0.25)
        ready = requests.get(f"{web.url}/readyz", timeout=10)
        alive = [web.process is not None and web.process.poll(), worker.process and worker.process.poll()]
    finally:
        web.stop()
        worker.stop()
    assert statuses[-1] == 200, statuses
    assert after.headers["X-Conversation-Id"] == conversation_id  # the replica had the conversation
    assert ha.master_address() == ha.replica.address
    assert ready.status_code == 200, ready.text
    assert alive == [None, None]  # the same processes: nothing restarted
