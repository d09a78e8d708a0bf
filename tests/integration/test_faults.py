"""Every simulator fault, through the real stack: honest statuses, never an error dressed as text."""

from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import Stack, body, isolated_app, sse_data, sse_lines, streamed_text
from tests.support.stack import WorkerProcess


def error_of(response: requests.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_throttled_is_429_with_retry_after(gateway: Stack) -> None:
    response = gateway.post(body("[sim:throttled] hi"))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert error_of(response)["code"] == "rate_limit_exceeded"


def test_throttled_stream_is_an_http_429_before_the_stream_starts(gateway: Stack) -> None:
    response = gateway.post(body("[sim:throttled] hi", stream=True), stream=True)
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/json")


ACCOUNT_FAULTS = {
    # fault: {dialect: (code, words the operator needs in the message)}
    "captcha": {
        "bing": ("upstream_captcha_required", "captcha"),
        # Issue #15: the cure is a fresh copy of the browser's request, identity and all.
        "copilot": ("upstream_challenge_required", "copy any request to the upstream as cURL"),
    },
    "cloudflare": {"copilot": ("upstream_challenge_required", "copy any request to the upstream as cURL")},
    "unauthorized": {"bing": ("upstream_unauthorized", "UPSTREAM_COOKIES")},
    "unavailable": {"copilot": ("upstream_region_unavailable", "region")},
}


@pytest.mark.parametrize("fault", sorted(ACCOUNT_FAULTS))
def test_account_problems_tell_the_operator_and_say_do_not_retry(gateway: Stack, fault: str) -> None:
    if gateway.dialect not in ACCOUNT_FAULTS[fault]:
        pytest.skip(f"{gateway.dialect} has no {fault} fault")
    code, words = ACCOUNT_FAULTS[fault][gateway.dialect]
    response = gateway.post(body(f"[sim:{fault}] hi"))
    assert 500 <= response.status_code < 600
    assert response.headers["x-should-retry"] == "false"
    error = error_of(response)
    assert error["code"] == code
    assert words.lower() in error["message"].lower()


def test_revoked_account_cookies_are_an_account_error(gateway: Stack) -> None:
    with isolated_app(gateway, "revoked", UPSTREAM_COOKIES="_U=revoked") as (server, env):
        worker = WorkerProcess(env).start()
        try:
            response = requests.post(server.url + "/v1/chat/completions", json=body("hi"), timeout=30)
        finally:
            worker.stop()
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    error = error_of(response)
    assert error["code"] == "upstream_unauthorized"
    assert "UPSTREAM_COOKIES" in error["message"]


def test_internal_error_is_a_502(gateway: Stack) -> None:
    response = gateway.post(body("[sim:internal] hi"))
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_error"


def test_mid_stream_disconnect_ends_the_stream_with_an_error_event(gateway: Stack) -> None:
    response = gateway.post(body("[sim:disconnect] hi", stream=True), stream=True)
    assert response.status_code == 200
    events = sse_data(sse_lines(response))
    assert events[-1] == "[DONE]"
    assert "error" in events[-2]
    assert events[-2]["error"]["code"] == "upstream_interrupted"
    assert streamed_text(events[:-2])  # the partial answer did stream


@pytest.mark.parametrize("fault", ["disconnect", "drop"])
def test_mid_stream_failure_without_streaming_is_a_502(gateway: Stack, fault: str) -> None:
    response = gateway.post(body(f"[sim:{fault}] hi"))
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_interrupted"


def test_hang_before_first_token_times_out_as_504(gateway: Stack) -> None:
    response = gateway.post(body("[sim:hang] hi"))
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"


def test_hang_mid_answer_ends_a_stream_with_an_error_event(gateway: Stack) -> None:
    response = gateway.post(body("[sim:hang_after=2] hi", stream=True), stream=True)
    events = sse_data(sse_lines(response))
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_timeout"


def test_slow_stream_sends_heartbeat_comments(gateway: Stack) -> None:
    # SSE_HEARTBEAT_SECONDS is 2 in the test stack; the two updates come 2.5 s apart.
    response = gateway.post(body("[sim:slow=2.5][sim:long=2] hi", stream=True), stream=True)
    lines = sse_lines(response)
    first = next(index for index, line in enumerate(lines) if '"w1"' in line)
    assert ": keep-alive" in lines[first:]  # sent in the gap
    assert streamed_text(sse_data(lines)) == "w1 w2"


def test_long_answer_arrives_whole(gateway: Stack) -> None:
    # 1500 updates, 1 ms apart: the length is the point, not the pace (the default 5 ms adds 7.5 s).
    response = gateway.post(body("[sim:slow=0.001][sim:long=1500] hi", stream=True), stream=True)
    text = streamed_text(sse_data(sse_lines(response)))
    assert text == " ".join(f"w{i}" for i in range(1, 1501))


@pytest.mark.dialects("bing", reason="Copilot has no documented retraction")
def test_retraction_keeps_what_was_streamed_and_reports_content_filter(gateway: Stack) -> None:
    response = gateway.post(body("[sim:apology] hi"))
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "Sorry! That's on me" not in choice["message"]["content"]
    assert choice["message"]["content"]


@pytest.mark.dialects("bing", reason="Copilot has no documented refusal frame")
def test_refusal_is_content_filter_with_the_apology(gateway: Stack) -> None:
    choice = gateway.post(body("[sim:refuse] hi")).json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"].startswith("Sorry! That's on me")


def test_search_progress_and_citations(gateway: Stack) -> None:
    response = gateway.post(body("[sim:search] cake", stream=True), stream=True)
    lines = sse_lines(response)
    chunks = [c for c in sse_data(lines) if isinstance(c, dict)]
    annotations = [a for c in chunks for a in c["choices"][0]["delta"].get("annotations", []) if c["choices"]]
    assert [a["type"] for a in annotations] == ["url_citation", "url_citation"]
    assert len({a["url_citation"]["url"] for a in annotations}) == 2
    text = streamed_text(chunks)
    for annotation in annotations:
        citation = annotation["url_citation"]
        assert citation["url"].startswith("https://")
        assert citation["title"]
        if gateway.dialect == "bing":  # ChatHub marks its sources in the text as [^N^]
            assert text[citation["start_index"] : citation["end_index"]].startswith("[^")
    if gateway.dialect == "bing":
        assert any(line.startswith(": ") and "Searching the web for" in line for line in lines)

    whole = gateway.post(body("[sim:search] cake")).json()["choices"][0]["message"]
    assert len(whole["annotations"]) == 2


@pytest.mark.dialects("copilot")
def test_proof_of_work_challenge_is_answered_and_the_turn_goes_through(gateway: Stack) -> None:
    response = gateway.post(body("[sim:hashcash] prove it"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello! You said: prove it. This is turn 1."
    [turn] = gateway.upstream(response.headers["X-Conversation-Id"])["turns"]
    assert turn["challenge"]["method"] == "hashcash"


@pytest.mark.dialects("copilot")
def test_arithmetic_challenge_is_answered(gateway: Stack) -> None:
    response = gateway.post(body("[sim:arithmetic] sum it"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello! You said: sum it. This is turn 1."


@pytest.mark.dialects("copilot")
def test_a_wrongly_answered_challenge_is_a_protocol_error(gateway: Stack) -> None:
    gateway.simulator.configure(hashcash_variant="hex")  # the other, less likely, reading of the puzzle
    response = gateway.post(body("[sim:hashcash] prove it"))
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_protocol_error"
    # Our re-sent `send` after the rejected answer is a violation the test itself provoked.
    assert gateway.simulator.stats()["violations"] == [
        "copilot: duplicate send without a challenge in between"
    ]
    gateway.simulator.reset()


@pytest.mark.dialects("copilot")
def test_invalid_event_is_a_protocol_error(gateway: Stack) -> None:
    response = gateway.post(body("[sim:invalid_event] hi"))
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_protocol_error"


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize("fault", ["image", "image_close"])
def test_generated_images_arrive_as_markdown_and_in_the_extension_field(gateway: Stack, fault: str) -> None:
    message = gateway.post(body(f"[sim:{fault}] draw a red apple")).json()["choices"][0]["message"]
    [image] = message["images"]
    assert image["url"].startswith("https://")
    assert f"]({image['url']})" in message["content"]
    stream = gateway.post(body(f"[sim:{fault}] draw a red apple", stream=True), stream=True)
    chunks = [c for c in sse_data(sse_lines(stream)) if isinstance(c, dict)]
    [streamed] = [i for c in chunks if c["choices"] for i in c["choices"][0]["delta"].get("images", [])]
    assert streamed["prompt"] == image["prompt"]
    assert f"]({streamed['url']})" in streamed_text(chunks)


@pytest.mark.dialects("copilot")
def test_reasoning_travels_as_comments(gateway: Stack) -> None:
    response = gateway.post(body("[sim:reasoning] think", model="think-deeper", stream=True), stream=True)
    lines = sse_lines(response)
    assert any(line.startswith(": ") for line in lines if line != ": keep-alive")
    assert streamed_text(sse_data(lines)) == "Hello! You said: think. This is turn 1."
