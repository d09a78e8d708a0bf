"""Every simulator fault, through the real stack: honest statuses, never an error dressed as text."""

from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import Stack, body, sse_data, sse_lines, streamed_text


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


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        ("captcha", "upstream_captcha_required", "captcha"),
        ("unauthorized", "upstream_unauthorized", "UPSTREAM_COOKIES"),
    ],
)
def test_account_problems_tell_the_operator_and_say_do_not_retry(
    gateway: Stack, fault: str, code: str, words: str
) -> None:
    response = gateway.post(body(f"[sim:{fault}] hi"))
    assert 500 <= response.status_code < 600
    assert response.headers["x-should-retry"] == "false"
    error = error_of(response)
    assert error["code"] == code
    assert words.lower() in error["message"].lower()


def test_internal_error_is_a_502(gateway: Stack) -> None:
    response = gateway.post(body("[sim:internal] hi"))
    assert response.status_code == 502
    assert "ServiceClient failure" in error_of(response)["message"]


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
    # SSE_HEARTBEAT_SECONDS is 2 in the test stack; updates come 2.5 s apart.
    response = gateway.post(body("[sim:slow=2.5][sim:long=3] hi", stream=True), stream=True)
    lines = sse_lines(response)
    assert ": keep-alive" in lines
    assert streamed_text(sse_data(lines)) == "w1 w2 w3"


def test_long_answer_arrives_whole(gateway: Stack) -> None:
    response = gateway.post(body("[sim:long=1500] hi", stream=True), stream=True)
    text = streamed_text(sse_data(sse_lines(response)))
    assert text == " ".join(f"w{i}" for i in range(1, 1501))


def test_retraction_keeps_what_was_streamed_and_reports_content_filter(gateway: Stack) -> None:
    response = gateway.post(body("[sim:apology] hi"))
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "Sorry! That's on me" not in choice["message"]["content"]
    assert choice["message"]["content"]


def test_refusal_is_content_filter_with_the_apology(gateway: Stack) -> None:
    choice = gateway.post(body("[sim:refuse] hi")).json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"].startswith("Sorry! That's on me")


def test_search_progress_and_citations(gateway: Stack) -> None:
    response = gateway.post(body("[sim:search] cake", stream=True), stream=True)
    lines = sse_lines(response)
    assert any(line.startswith(": ") and "Searching the web for" in line for line in lines)
    chunks = [c for c in sse_data(lines) if isinstance(c, dict)]
    annotations = [a for c in chunks for a in c["choices"][0]["delta"].get("annotations", []) if c["choices"]]
    assert [a["type"] for a in annotations] == ["url_citation", "url_citation"]
    text = streamed_text(chunks)
    for annotation in annotations:
        citation = annotation["url_citation"]
        assert citation["url"].startswith("https://")
        assert text[citation["start_index"] : citation["end_index"]].startswith("[^")

    whole = gateway.post(body("[sim:search] cake")).json()["choices"][0]["message"]
    assert len(whole["annotations"]) == 2
