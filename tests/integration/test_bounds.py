"""Inputs are bounded on the real server: body size (chunked too), nesting, the upstream's limits,
and the largest accepted body is served without stalling the web process.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from service.limits import COPILOT_TEXT_LIMIT
from service.priming import flatten_context, turns
from service.runtime.embedded_redis import EmbeddedRedis
from service.runtime.settings import Settings
from tests.integration.conftest import Stack, body
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, gateway_env

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_web(stack_redis: EmbeddedRedis, simulator: SimulatorProcess) -> Iterator[GunicornServer]:
    """gunicorn with a 64 KiB body limit; no worker: everything here is refused before enqueueing."""
    env = gateway_env(stack_redis.url, simulator.http_url, MAX_REQUEST_BYTES=str(LIMIT), RQ_QUEUE="bounds")
    web = GunicornServer(env)
    try:
        yield web.start()
    finally:
        web.stop()


def assert_openai_error(
    response: requests.Response | tuple[int, dict[str, Any]], status: int
) -> dict[str, Any]:
    code, payload = (
        (response.status_code, response.json()) if isinstance(response, requests.Response) else response
    )
    assert code == status, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return dict(error)


def padded(size: int, **extra: Any) -> bytes:
    """A chat body of exactly `size` bytes."""
    base = json.dumps(body("hi", pad="", **extra)).encode()
    data = json.dumps(body("hi", pad="x" * (size - len(base)), **extra)).encode()
    assert len(data) == size
    return data


CHUNKED_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


def chunked(data: bytes, size: int = 8192) -> list[bytes]:
    """`data` framed as HTTP/1.1 chunks, with the final empty chunk."""
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return [f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in parts] + [b"0\r\n\r\n"]


def raw_post(url: str, head: bytes, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send a request byte by byte on a socket; the server may answer before it has read it all."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: the answer is what matters
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    header, _, payload = received.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(payload)


def _expected_length(received: bytes) -> int:
    header, _, _ = received.partition(b"\r\n\r\n")
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(header) + 4 + int(value)
    return 1 << 30


def test_a_body_over_the_limit_is_a_413(small_web: GunicornServer) -> None:
    response = requests.post(
        small_web.url + "/v1/chat/completions",
        data=padded(LIMIT + 1),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    error = assert_openai_error(response, 413)
    assert error["code"] == "request_too_large" and str(LIMIT) in error["message"]


def test_a_chunked_body_over_the_limit_is_a_413(small_web: GunicornServer) -> None:
    error = assert_openai_error(raw_post(small_web.url, CHUNKED_HEAD, chunked(padded(LIMIT + 4096))), 413)
    assert error["code"] == "request_too_large"


def test_a_chunked_body_of_exactly_the_limit_is_read_whole(small_web: GunicornServer) -> None:
    data = padded(LIMIT, stop=5)
    error = assert_openai_error(raw_post(small_web.url, CHUNKED_HEAD, chunked(data)), 400)
    assert error["param"] == "stop"  # the body arrived whole and was validated
    too_big = padded(LIMIT + 1, stop=5)
    assert assert_openai_error(raw_post(small_web.url, CHUNKED_HEAD, chunked(too_big)), 413)


@pytest.mark.parametrize(
    "nested",
    [
        '{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "x": '
        + "[" * 20_000
        + "]" * 20_000
        + "}",
        '{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "x": '
        + '{"a":' * 10_000  # 20,000 would not fit in 64 KiB; 10,000 is ten times the recursion limit
        + "1"
        + "}" * 10_000
        + "}",
        '{"model": "gpt-4", "messages": [{"role": "user", "content": ' + "[" * 20_000 + "]" * 20_000 + "}]}",
    ],
    ids=["arrays", "objects", "in-a-message"],
)
def test_deep_nesting_is_a_400_not_a_500(small_web: GunicornServer, nested: str) -> None:
    response = requests.post(
        small_web.url + "/v1/chat/completions",
        data=nested.encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_openai_error(response, 400)
    assert requests.get(small_web.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.dialects("copilot", reason="ChatHub documents no per-message limit")
def test_a_prompt_over_copilots_limit_is_refused_before_the_upstream(gateway: Stack) -> None:
    sends = gateway.simulator.stats()["copilot"]["invocations"]
    response = gateway.post(body("x" * (COPILOT_TEXT_LIMIT + 1), model="copilot"))
    error = assert_openai_error(response, 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert gateway.simulator.stats()["copilot"]["invocations"] == sends


@pytest.mark.dialects("copilot", reason="ChatHub documents no per-message limit")
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_upstream_text_too_long_is_the_same_400(gateway: Stack, stream: bool) -> None:
    response = gateway.post(body("[sim:text_too_long] hi", model="copilot", stream=stream))
    error = assert_openai_error(response, 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")


@pytest.mark.dialects("copilot", reason="only Copilot's page context has a limit below CONTEXT_MAX_CHARS")
def test_long_history_is_primed_within_copilots_limit(gateway: Stack) -> None:
    # 30 KB of history: more than one upstream turn carries, so it goes ahead in parts
    # (service/priming.py), every part within Copilot's limit, and none of it is cut.
    history: list[dict[str, str]] = []
    for i in range(15):
        history.append({"role": "user", "content": f"question {i} " + "q" * 990})
        history.append({"role": "assistant", "content": f"answer {i} " + "a" * 990})
    messages = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": "hi"}]
    before = int(gateway.simulator.stats()["invocations"])
    response = gateway.post({"model": "copilot", "messages": messages})
    assert response.status_code == 200, response.text
    # ⌈context / turn budget⌉ turns: the question rides in the last part, not in a turn of its own.
    context = flatten_context([(m["role"], m["content"]) for m in history], "Be brief.", 64000)
    assert int(gateway.simulator.stats()["invocations"]) - before == turns(len(context) + 20, 10000) == 4
    last = gateway.simulator.last_send()
    assert last is not None
    assert response.json()["choices"][0]["message"]["content"].startswith("Hello! You said: hi.")
    page = ((last.get("context") or {}).get("edge") or {}).get("pageContent") or ""
    assert len(page) <= COPILOT_TEXT_LIMIT
    assert "question 0 " not in page  # primed, not injected again


@pytest.mark.dialects(
    "bing", reason="one dialect is enough: the body is checked and tokenized in the web tier"
)
def test_the_largest_accepted_body_is_served_while_the_process_answers_others(gateway: Stack) -> None:
    limit = Settings().max_input_chars
    # The bulk is history: counted and tokenized in full, injected only up to CONTEXT_MAX_CHARS.
    words = "lorem ipsum dolor sit amet " * (limit // 27 - 1)
    largest = {
        "model": "Balanced",
        "messages": [
            {"role": "user", "content": words.strip()},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hi"},
        ],
    }
    assert len(json.dumps(largest)) <= Settings().max_request_bytes
    result: dict[str, Any] = {}

    def big() -> None:
        result["response"] = gateway.post(largest, timeout=120)

    thread = threading.Thread(target=big)
    thread.start()
    answered_meanwhile = 0
    while thread.is_alive():
        if requests.get(gateway.url + "/healthz", timeout=30).status_code == 200 and thread.is_alive():
            answered_meanwhile += 1
    thread.join()
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > limit // 8
    assert answered_meanwhile > 0
