"""The Responses API with the official openai-python client against the real stack (both dialects)."""

from __future__ import annotations

import json
from typing import cast

import openai
import pytest
import requests
from openai import OpenAI
from openai.types.responses import ResponseCreatedEvent, ResponseInputParam
from openai.types.responses.response_output_text import AnnotationURLCitation

from tests.integration.conftest import Stack, sse_lines
from tests.support.sdk_types import error_body, input_role, narrow, output_message, output_text, stored


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=30)


def test_create_returns_a_response_object(client: OpenAI, gateway: Stack) -> None:
    response = client.responses.create(
        model="Balanced", input="hello responses", instructions="Be brief.", metadata={"k": "v"}
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello! You said: hello responses. This is turn 1."
    message = output_message(response.output[0])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert response.usage is not None and response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.instructions == "Be brief." and response.metadata == {"k": "v"}
    assert response.previous_response_id is None
    # The raw body has only keys the SDK model declares (plus `store`, which OpenAI sends too).
    raw = requests.get(
        f"{gateway.url}/v1/responses/{response.id}",
        headers={"Authorization": "Bearer sk-anything"},
        timeout=10,
    ).json()
    assert set(raw) - {"store"} <= set(type(response).model_fields)
    assert raw["output"] == json.loads(response.model_dump_json(exclude_unset=True))["output"]


def test_stream_sends_typed_events_in_openai_order(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-5.3-codex", input="stream responses") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == final.output_text == "Hello! You said: stream responses. This is turn 1."
    assert final.model == "gpt-5.3-codex"  # Codex CLI's name, through the default aliases


def test_stream_wire_has_event_lines_and_no_done(gateway: Stack) -> None:
    response = gateway.post(
        {"model": "Balanced", "input": "wire", "stream": True}, "/v1/responses", stream=True
    )
    lines = sse_lines(response)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    names = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert names == [payload["type"] for payload in payloads]
    assert "[DONE]" not in "\n".join(lines)


def test_previous_response_id_continues_one_upstream_conversation(client: OpenAI, gateway: Stack) -> None:
    first = client.responses.create(model="Balanced", input="my name is Ada")
    second = client.responses.create(
        model="Balanced", input="[sim:recall] who am I?", previous_response_id=first.id
    )
    assert second.output_text == "Earlier you said: my name is Ada"
    third = client.responses.create(model="Balanced", input="third turn", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    assert third.output_text.endswith("This is turn 3.")
    conversation_id = stored(gateway.redis.get(f"completion:{third.id}"))
    assert gateway.upstream_users(conversation_id) == [
        "my name is Ada",
        "[sim:recall] who am I?",
        "third turn",
    ]


def test_unknown_or_foreign_previous_response_is_a_404(client: OpenAI, gateway: Stack) -> None:
    mine = client.responses.create(model="Balanced", input="secret")
    other = OpenAI(base_url=gateway.url + "/v1", api_key="sk-someone-else", max_retries=0, timeout=30)
    for caller, response_id in ((client, "resp_doesnotexist"), (other, mine.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            caller.responses.create(model="Balanced", input="hi", previous_response_id=response_id)
        assert error_body(caught.value)["code"] == "previous_response_not_found"
        assert error_body(caught.value)["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)


def test_store_false_keeps_nothing(client: OpenAI, gateway: Stack) -> None:
    response = client.responses.create(model="Balanced", input="forget me", store=False)
    assert response.output_text.startswith("Hello! You said: forget me")
    assert gateway.redis.get(f"completion:{response.id}") is None
    assert gateway.redis.get(f"response:{response.id}") is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_retrieve_input_items_and_delete(client: OpenAI) -> None:
    # An assistant turn as bare output_text (no id, no status): OpenAI accepts it, the SDK's types do not.
    history = cast(
        ResponseInputParam,
        [
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"role": "user", "content": "second"},
        ],
    )
    response = client.responses.create(model="Balanced", input=history)
    assert client.responses.retrieve(response.id).output_text == response.output_text
    items = client.responses.input_items.list(response.id, order="asc")
    assert [input_role(item) for item in items.data] == ["user", "assistant", "user"]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_validation_errors_name_the_param(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        robot = [{"role": "robot", "content": "x"}]  # deliberately not a role the SDK's types allow
        client.responses.create(model="Balanced", input=robot)  # type: ignore[arg-type]
    assert error_body(caught.value)["param"] == "input[0].role"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="Balanced", input="x", previous_response_id="resp_a", conversation="conv_b"
        )
    assert error_body(caught.value)["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="llama-9-turbo-nope", input="x")  # any gpt-* is aliased (#17)


def test_upstream_failure_is_an_http_error_not_an_answer(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="Balanced", input="[sim:throttled] hi")


def test_failure_after_the_stream_began_is_response_failed(gateway: Stack) -> None:
    body = {"model": "Balanced", "input": "[sim:hang_after=2] hi", "stream": True}
    lines = sse_lines(gateway.post(body, "/v1/responses", stream=True))
    payloads = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert payloads[-1]["type"] == "response.failed"
    failed = payloads[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "response.completed" not in [payload["type"] for payload in payloads]
    # The stored response says so too.
    stored = requests.get(f"{gateway.url}/v1/responses/{failed['id']}", timeout=10).json()
    assert stored["status"] == "failed"


def test_cancel_stops_a_running_response(client: OpenAI, gateway: Stack) -> None:
    stream = client.responses.create(model="Balanced", input="[sim:slow=0.3][sim:long=60] go", stream=True)
    events = iter(stream)
    created = narrow(next(events), ResponseCreatedEvent)
    assert created.type == "response.created"
    # A streamed response is stored once its text flows: read up to the second delta.
    deltas = (event for event in events if event.type == "response.output_text.delta")
    next(deltas), next(deltas)
    cancelled = client.responses.cancel(created.response.id)
    assert cancelled.status == "cancelled"
    stream.close()
    assert client.responses.retrieve(created.response.id).status == "cancelled"


def test_citations_are_url_citation_annotations_and_search_progress_is_not_text(
    client: OpenAI, gateway: Stack
) -> None:
    response = client.responses.create(model="Balanced", input="[sim:search] cake")
    notes = output_text(response.output[0]).annotations
    assert [note.type for note in notes] == ["url_citation", "url_citation"]
    urls = [narrow(note, AnnotationURLCitation) for note in notes]
    assert all(note.url.startswith("https://") and note.title for note in urls)
    lines = sse_lines(
        gateway.post(
            {"model": "Balanced", "input": "[sim:search] pie", "stream": True}, "/v1/responses", stream=True
        )
    )
    payloads = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    added = [p for p in payloads if p["type"] == "response.output_text.annotation.added"]
    assert len(added) == 2
    text = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
    assert "Searching the web" not in text


def test_store_false_on_a_stored_conversation_leaves_it_untouched(client: OpenAI, gateway: Stack) -> None:
    first = client.responses.create(model="Balanced", input="my name is Ada")
    aside = client.responses.create(
        model="Balanced", input="[sim:recall] aside", previous_response_id=first.id, store=False
    )
    assert aside.output_text == "Earlier you said: my name is Ada"  # it saw the context
    then = client.responses.create(model="Balanced", input="[sim:recall] next", previous_response_id=first.id)
    assert then.output_text == "Earlier you said: my name is Ada"  # the aside left no trace
    conversation_id = stored(gateway.redis.get(f"completion:{first.id}"))
    assert gateway.upstream_users(conversation_id) == ["my name is Ada", "[sim:recall] next"]
