"""The gevent RQ worker as a real process: concurrency, registries, timeouts, SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.support.stack import WorkerProcess, wait_for


@pytest.fixture()
def worker_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RQ_", "REDIS_URL", "WORKER_"))}
    env.update({"REDIS_URL": redis_url, "RQ_QUEUE": "pooltest", "LOG_LEVEL": "WARNING"})
    return env


@pytest.fixture()
def queue(redis_client: Redis) -> Queue:
    return Queue("pooltest", connection=redis_client, serializer=JSONSerializer)


@pytest.fixture()
def worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    process = WorkerProcess(dict(worker_env, WORKER_CONCURRENCY="20")).start()
    yield process
    process.stop(signal.SIGKILL)


def test_one_process_runs_many_jobs_at_once(worker: WorkerProcess, queue: Queue, redis_client: Redis) -> None:
    for _ in range(20):
        queue.enqueue("tests.support.jobs.track", "conc", 1.0)
    wait_for(lambda: redis_client.llen("conc:done") == 20)
    # All twenty overlapped in one process: stock RQ would have run them one by one.
    assert int(redis_client.get("conc:max") or 0) >= 15


def test_concurrency_is_capped_by_the_setting(
    worker_env: dict[str, str], queue: Queue, redis_client: Redis
) -> None:
    process = WorkerProcess(dict(worker_env, WORKER_CONCURRENCY="3")).start()
    try:
        for _ in range(7):
            queue.enqueue("tests.support.jobs.track", "cap", 0.3)
        wait_for(lambda: redis_client.llen("cap:done") == 7)
        assert int(redis_client.get("cap:max") or 0) == 3
    finally:
        process.stop(signal.SIGKILL)


def test_registries_tell_the_truth(worker: WorkerProcess, queue: Queue, redis_client: Redis) -> None:
    ok = queue.enqueue("tests.support.jobs.track", "reg", 0.0)
    bad = queue.enqueue("tests.support.jobs.fail", "boom")
    wait_for(lambda: ok.get_status(refresh=True) == JobStatus.FINISHED)
    wait_for(lambda: bad.get_status(refresh=True) == JobStatus.FAILED)
    assert ok.id in FinishedJobRegistry(queue=queue)
    assert bad.id in FailedJobRegistry(queue=queue)
    result = bad.latest_result()
    assert result is not None and "RuntimeError: boom" in (result.exc_string or "")
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    assert ok.return_value(refresh=True) == "ok"


def test_job_timeout_is_enforced_in_the_greenlet(
    worker: WorkerProcess, queue: Queue, redis_client: Redis
) -> None:
    slow = queue.enqueue("tests.support.jobs.track", "slow", 30.0, job_timeout=1)
    quick = queue.enqueue("tests.support.jobs.track", "quick", 0.0)
    wait_for(lambda: slow.get_status(refresh=True) == JobStatus.FAILED)
    result = slow.latest_result()
    assert result is not None and "JobTimeoutException" in (result.exc_string or "")
    assert quick.get_status(refresh=True) == JobStatus.FINISHED  # the other greenlets were unharmed


def test_worker_registers_and_heartbeats(worker: WorkerProcess, queue: Queue, redis_client: Redis) -> None:
    assert worker.process is not None
    workers = [w for w in Worker.all(connection=redis_client) if w.pid == worker.process.pid]
    assert len(workers) == 1
    assert workers[0].last_heartbeat is not None
    assert workers[0].queue_names() == ["pooltest"]


def test_sigterm_lets_running_jobs_finish_then_exits(
    worker_env: dict[str, str], queue: Queue, redis_client: Redis
) -> None:
    process = WorkerProcess(dict(worker_env, WORKER_CONCURRENCY="5")).start()
    jobs = [queue.enqueue("tests.support.jobs.track", "drain", 1.5) for _ in range(3)]
    wait_for(lambda: int(redis_client.get("drain:running") or 0) == 3)
    assert process.stop(signal.SIGTERM, timeout=20) == 0
    assert [job.get_status(refresh=True) for job in jobs] == [JobStatus.FINISHED] * 3
    # A job enqueued after the stop request is left for another worker.
    later = queue.enqueue("tests.support.jobs.track", "later", 0.0)
    time.sleep(0.3)
    assert later.get_status(refresh=True) == JobStatus.QUEUED
    assert process.process is not None
    assert not [w for w in Worker.all(connection=redis_client) if w.pid == process.process.pid]
