"""Streams that survive a dropped connection: real gunicorn, workers and simulator (both dialects).

A gunicorn of its own with two API keys (ownership) and a short resume grace serves the
stack's queue, so the stack's workers run its turns. Streams are cut by closing the
client's socket, as a dropped connection would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.integration.conftest import Stack, body
from tests.support.http import text_lines
from tests.support.stack import GunicornServer, wait_for

ONE = "sk-resume-one-0123456789abcdef"
TWO = "sk-resume-two-0123456789abcdef"
GRACE = 6.0
WORDS = 30
SLOW = f"[sim:slow=0.1][sim:long={WORDS}]"
ANSWER = " ".join(f"w{i}" for i in range(1, WORDS + 1))


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[str]:
    env = dict(stack.env, API_KEYS=f"{ONE},{TWO}", STREAM_RESUME_GRACE_SECONDS=str(GRACE))
    web = GunicornServer(env)
    try:
        web.start()
        yield web.url
    finally:
        web.stop()


@pytest.fixture()
def url(server: str, gateway: Stack) -> str:
    return server


def sdk(url: str, key: str = ONE) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def auth(key: str = ONE, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def frames(response: requests.Response) -> Iterator[dict[str, str]]:
    """The SSE events of a response as `{field: value}` (comments left out), as they arrive."""
    fields: dict[str, str] = {}
    for line in text_lines(response):
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def chunk_text(event: dict[str, str]) -> str:
    data = event.get("data", "")
    if not data.startswith("{"):
        return ""
    payload = json.loads(data)
    return "".join(choice["delta"].get("content") or "" for choice in payload.get("choices", []))


def cut_chat(
    url: str, request: dict[str, Any], headers: dict[str, str], texts: int = 3
) -> tuple[str, str, str]:
    """Stream a chat completion and drop the connection after `texts` content chunks.

    Returns (completion id, the last event id received, the text received).
    """
    response = requests.post(
        url + "/v1/chat/completions", json=request, headers=headers, stream=True, timeout=30
    )
    assert response.status_code == 200, response.text
    received, seen, last_id, completion_id = [], 0, "", ""
    for event in frames(response):
        assert "id" in event, event  # every data frame carries its resume point
        last_id = event["id"]
        completion_id = completion_id or json.loads(event["data"])["id"]
        text = chunk_text(event)
        received.append(text)
        seen += bool(text)
        if seen == texts:
            break
    response.close()  # the connection drops
    return completion_id, last_id, "".join(received)


def rest_of(response: requests.Response) -> tuple[str, list[str]]:
    """The text and the event ids of a resumed stream, read to `[DONE]`."""
    assert response.status_code == 200, response.text
    texts, ids = [], []
    for event in frames(response):
        ids.append(event.get("id", ""))
        texts.append(chunk_text(event))
        if event.get("data") == "[DONE]":
            break
    return "".join(texts), ids


def job_result(gateway: Stack, completion_id: str) -> dict[str, Any] | None:
    job = Job.fetch(completion_id, connection=gateway.redis, serializer=JSONSerializer)
    wait_for(lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED), timeout=30)
    result: dict[str, Any] | None = job.return_value(refresh=True)
    return result


def finished(gateway: Stack, completion_id: str) -> bool:
    raw = gateway.redis.lindex(f"relay:{completion_id}:log", -1)
    return raw is not None and json.loads(raw)["type"] == "done"


# -- Chat Completions --------------------------------------------------------------


@pytest.mark.parametrize("when", ["live", "after_end"])
@pytest.mark.parametrize("way", ["repost", "get"])
def test_a_cut_chat_stream_resumes_from_last_event_id(url: str, gateway: Stack, way: str, when: str) -> None:
    key = f"resume-{way}-{when}-{time.monotonic_ns()}"
    request = body(f"{SLOW} go", stream=True)
    completion_id, last_id, before = cut_chat(url, request, auth(**{"Idempotency-Key": key}))
    assert before and ANSWER.startswith(before.rstrip())
    if when == "after_end":
        wait_for(lambda: finished(gateway, completion_id), timeout=30)
    else:
        assert not finished(gateway, completion_id)
    headers = auth(**{"Idempotency-Key": key, "Last-Event-ID": last_id})
    if way == "repost":
        resumed = requests.post(
            url + "/v1/chat/completions", json=request, headers=headers, stream=True, timeout=30
        )
    else:
        resumed = requests.get(
            f"{url}/v1/chat/completions/{completion_id}?stream=true", headers=headers, stream=True, timeout=30
        )
    rest, ids = rest_of(resumed)
    assert before + rest == ANSWER
    assert int(ids[0]) > int(last_id)  # nothing the client had is sent again
    # The turn was not cancelled: it ran to its end.
    result = job_result(gateway, completion_id)
    assert result is not None and result["status"] == "done"


def test_a_stored_chat_completion_is_its_owners_alone(url: str, gateway: Stack) -> None:
    request = body("keep this one", store=True, metadata={"topic": "resume"})
    made = requests.post(url + "/v1/chat/completions", json=request, headers=auth(), timeout=30)
    assert made.status_code == 200, made.text
    completion_id = made.json()["id"]
    stored = requests.get(f"{url}/v1/chat/completions/{completion_id}", headers=auth(), timeout=10)
    assert stored.status_code == 200
    got = stored.json()
    assert got["object"] == "chat.completion" and got["id"] == completion_id
    assert got["metadata"] == {"topic": "resume"}
    assert got["choices"] == made.json()["choices"] and got["usage"] == made.json()["usage"]
    assert got["model"] == made.json()["model"] and got["created"] == made.json()["created"]
    retrieved = sdk(url).chat.completions.retrieve(completion_id)  # the SDK's stored-completions call
    assert retrieved.choices[0].message.content == made.json()["choices"][0]["message"]["content"]
    assert retrieved.metadata == {"topic": "resume"}
    with pytest.raises(openai.NotFoundError):
        sdk(url, TWO).chat.completions.retrieve(completion_id)
    foreign = requests.get(f"{url}/v1/chat/completions/{completion_id}", headers=auth(TWO), timeout=10)
    unknown = requests.get(f"{url}/v1/chat/completions/chatcmpl-nope", headers=auth(), timeout=10)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["message"].replace(completion_id, "X") == unknown.json()["error"][
        "message"
    ].replace("chatcmpl-nope", "X")
    resumed = requests.get(
        f"{url}/v1/chat/completions/{completion_id}?stream=true", headers=auth(TWO), timeout=10
    )
    assert resumed.status_code == 404


def test_a_cut_stored_stream_finished_in_the_grace_is_stored(url: str, gateway: Stack) -> None:
    request = body("[sim:slow=0.05][sim:long=12] go", stream=True, store=True)
    completion_id, _, _ = cut_chat(url, request, auth(), texts=1)
    wait_for(lambda: finished(gateway, completion_id), timeout=30)
    stored = requests.get(f"{url}/v1/chat/completions/{completion_id}", headers=auth(), timeout=10)
    assert stored.status_code == 200, stored.text
    assert stored.json()["choices"][0]["message"]["content"] == " ".join(f"w{i}" for i in range(1, 13))


def test_nobody_back_within_the_grace_cancels_the_turn(url: str, gateway: Stack) -> None:
    request = body("[sim:slow=0.3][sim:long=200] go", stream=True)
    completion_id, _, _ = cut_chat(url, request, auth(**{"Idempotency-Key": f"lapse-{time.monotonic_ns()}"}))
    time.sleep(GRACE / 2)
    assert gateway.simulator.stats()["busy_sockets"] == 1  # still running upstream, waiting for its client
    started = time.monotonic()
    assert job_result(gateway, completion_id) == {"status": "cancelled"}
    assert time.monotonic() - started < GRACE + 5
    assert gateway.simulator.stats()["busy_sockets"] == 0
    # Nothing is left to resume.
    resumed = requests.get(
        f"{url}/v1/chat/completions/{completion_id}?stream=true", headers=auth(), timeout=10
    )
    assert resumed.status_code == 404


def test_without_store_or_key_a_disconnect_still_cancels_at_once(url: str, gateway: Stack) -> None:
    completion_id, _, _ = cut_chat(url, body("[sim:slow=0.3][sim:long=200] go", stream=True), auth())
    started = time.monotonic()
    assert job_result(gateway, completion_id) == {"status": "cancelled"}
    assert time.monotonic() - started < GRACE / 2  # not held for a grace
    resumed = requests.get(
        f"{url}/v1/chat/completions/{completion_id}?stream=true", headers=auth(), timeout=10
    )
    assert resumed.status_code == 404


# -- Responses ----------------------------------------------------------------------


def test_a_background_response_is_polled_to_completion(url: str, gateway: Stack) -> None:
    client = sdk(url)
    created = client.responses.create(
        model="Balanced", input="[sim:slow=0.05][sim:long=12] bg", background=True
    )
    assert created.background is True and created.status in ("queued", "in_progress")
    assert created.output == []
    polled = wait_for(
        lambda: (r := client.responses.retrieve(created.id)).status not in ("queued", "in_progress") and r,
        timeout=30,
    )
    assert polled.status == "completed" and polled.background is True
    assert polled.output_text == " ".join(f"w{i}" for i in range(1, 13))
    assert polled.usage is not None and polled.usage.output_tokens > 0
    with pytest.raises(openai.NotFoundError):
        sdk(url, TWO).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(url, TWO).responses.cancel(created.id)


def test_background_needs_store(url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(url).responses.create(model="Balanced", input="x", background=True, store=False)
    assert caught.value.body["param"] == "background"  # type: ignore[index]


@pytest.mark.parametrize(("background", "when"), [(False, "live"), (True, "live"), (False, "after_end")])
def test_a_cut_response_stream_resumes_with_starting_after(
    url: str, gateway: Stack, background: bool, when: str
) -> None:
    client = sdk(url)
    stream = client.responses.create(model="Balanced", input=f"{SLOW} go", stream=True, background=background)
    before, last, response_id = [], -1, ""
    for event in stream:
        last = event.sequence_number
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            before.append(event.delta)
            if len(before) == 3:
                break
    stream.close()  # the connection drops mid-answer
    assert response_id
    if when == "after_end":
        wait_for(lambda: finished(gateway, response_id), timeout=30)
    else:
        assert not finished(gateway, response_id)
    resumed = client.responses.retrieve(response_id, stream=True, starting_after=last)
    rest, numbers, final = [], [], None
    for event in resumed:
        numbers.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            rest.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert numbers[0] == last + 1 and numbers == list(range(last + 1, last + 1 + len(numbers)))
    assert "".join(before + rest) == ANSWER
    assert final is not None and final.output_text == ANSWER
    assert client.responses.retrieve(response_id).status == "completed"
    with pytest.raises(openai.NotFoundError):
        sdk(url, TWO).responses.retrieve(response_id, stream=True, starting_after=last)


def test_cancel_reaches_the_upstream_turn_of_a_background_response(url: str, gateway: Stack) -> None:
    client = sdk(url)
    created = client.responses.create(
        model="Balanced", input="[sim:slow=0.3][sim:long=200] go", background=True
    )
    assert wait_for(lambda: gateway.simulator.stats()["busy_sockets"] == 1, timeout=20)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert job_result(gateway, created.id) == {"status": "cancelled"}
    wait_for(lambda: gateway.simulator.stats()["busy_sockets"] == 0, timeout=5)
    time.sleep(0.5)  # the collector sees the turn end: it must not overwrite the cancel
    assert client.responses.retrieve(created.id).status == "cancelled"


def test_a_cut_response_stream_nobody_resumes_is_cancelled_after_the_grace(url: str, gateway: Stack) -> None:
    client = sdk(url)
    stream = client.responses.create(model="Balanced", input="[sim:slow=0.3][sim:long=200] go", stream=True)
    response_id = ""
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    stream.close()
    time.sleep(GRACE / 2)
    assert client.responses.retrieve(response_id).status == "in_progress"  # waiting for its client
    assert job_result(gateway, response_id) == {"status": "cancelled"}
    assert wait_for(lambda: client.responses.retrieve(response_id).status == "cancelled", timeout=5)


def test_a_new_turn_on_the_conversation_ends_an_abandoned_turns_grace(url: str, gateway: Stack) -> None:
    first = requests.post(url + "/v1/chat/completions", json=body("hello"), headers=auth(), timeout=30)
    conversation_id = first.headers["X-Conversation-Id"]
    request = body(
        "[sim:slow=0.3][sim:long=200] go", stream=True, store=True, conversation_id=conversation_id
    )
    completion_id, _, _ = cut_chat(url, request, auth())
    time.sleep(0.5)  # the gateway has seen the drop: the turn is in its grace, holding the conversation
    started = time.monotonic()
    after = requests.post(
        url + "/v1/chat/completions",
        json=body("moving on", conversation_id=conversation_id),
        headers=auth(),
        timeout=30,
    )
    assert after.status_code == 200, after.text
    assert time.monotonic() - started < GRACE - 2  # it did not wait out the abandoned turn's grace
    assert job_result(gateway, completion_id) == {"status": "cancelled"}
