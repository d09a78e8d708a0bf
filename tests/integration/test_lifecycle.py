"""What happens around a turn: client disconnects, dead workers, failed turns, the wsgi entry."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import pytest
import requests
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.integration.conftest import Stack, body, isolated_app, sse_data, sse_lines
from tests.support.http import text_lines
from tests.support.stack import WerkzeugServer, WorkerProcess, wait_for


def test_client_disconnect_cancels_the_upstream_turn(gateway: Stack) -> None:
    response = gateway.post(body("[sim:slow=0.3][sim:long=200] go", stream=True), stream=True)
    lines = text_lines(response)
    first = next(line for line in lines if line.startswith("data: "))
    completion_id = sse_data([first])[0]["id"]
    assert wait_for(lambda: gateway.simulator.stats()["busy_sockets"] == 1)
    response.close()  # the client goes away mid-answer
    wait_for(lambda: gateway.simulator.stats()["busy_sockets"] == 0, timeout=5)
    job = Job.fetch(completion_id, connection=gateway.redis, serializer=JSONSerializer)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED)
    result = job.return_value(refresh=True)
    assert result is not None and result["status"] == "cancelled"
    # A cancelled turn is not recorded.
    conversation_id = response.headers["X-Conversation-Id"]
    assert requests.get(f"{gateway.url}/v1/conversations/{conversation_id}", timeout=5).status_code == 404


def test_a_failed_turn_leaves_the_conversation_as_it_was(gateway: Stack) -> None:
    first = gateway.post(body("keep me"))
    conversation_id = first.headers["X-Conversation-Id"]
    url = f"{gateway.url}/v1/conversations/{conversation_id}/items"
    before = requests.get(url, timeout=5).json()
    assert len(before["data"]) == 2
    failed = gateway.post(body("[sim:throttled] lost", conversation_id=conversation_id))
    assert failed.status_code == 429
    assert requests.get(url, timeout=5).json() == before
    after = gateway.post(body("[sim:recall] ?", conversation_id=conversation_id))
    assert after.json()["choices"][0]["message"]["content"] == "Earlier you said: keep me"


@pytest.fixture()
def lonely(gateway: Stack) -> Iterator[tuple[WerkzeugServer, dict[str, str]]]:
    with isolated_app(gateway, "lonely", QUEUE_WAIT_TIMEOUT="2") as app:
        yield app


def test_a_worker_dying_mid_turn_ends_the_stream_with_an_error(
    gateway: Stack, lonely: tuple[WerkzeugServer, dict[str, str]]
) -> None:
    server, env = lonely
    worker = WorkerProcess(env).start()
    try:
        response = requests.post(
            server.url + "/v1/chat/completions",
            json=body("[sim:slow=0.5][sim:long=100] go", stream=True),
            stream=True,
            timeout=30,
        )
        lines = text_lines(response)
        next(line for line in lines if line.startswith("data: "))
        worker.kill()  # SIGKILL: no chance to say goodbye
        rest = sse_data([line for line in lines if line])
    finally:
        worker.stop(signal.SIGKILL)
    assert rest[-1] == "[DONE]"
    assert rest[-2]["error"]["code"] == "worker_lost"


def test_no_worker_means_a_503_not_a_hang(lonely: tuple[WerkzeugServer, dict[str, str]]) -> None:
    server, _ = lonely
    response = requests.post(server.url + "/v1/chat/completions", json=body("anyone?"), timeout=30)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"


def test_gunicorn_serves_many_streams_at_once(gateway: Stack) -> None:
    """Twenty concurrent streams through one gevent web process and the two workers."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        response = gateway.post(body(f"[sim:slow=0.05][sim:long=20] n{i}", stream=True), stream=True)
        return sse_data(sse_lines(response))[-1]

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(one, range(20))) == ["[DONE]"] * 20


def test_raw_socket_close_mid_request_does_not_crash_the_web_process(gateway: Stack) -> None:
    host, port = gateway.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"model"')
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200
