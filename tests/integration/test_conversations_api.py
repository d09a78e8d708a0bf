"""OpenAI's Conversations API with openai-python: one conversation id on every surface."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import Stack
from tests.support.sdk_types import conversation_message, conversation_text


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=30)


def test_create_read_update_list_and_delete(client: OpenAI) -> None:
    conversation = client.conversations.create(
        items=[
            {"type": "message", "role": "developer", "content": "Answer briefly."},
            {"type": "message", "role": "user", "content": "my name is Ada"},
            {"type": "message", "role": "assistant", "content": "Hello Ada"},
        ],
        metadata={"topic": "names"},
    )
    assert conversation.object == "conversation" and conversation.id.startswith("conv_")
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "names"}
    updated = client.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"}
    listed = client.conversations.items.list(conversation.id, order="asc")
    assert [conversation_message(item).role for item in listed.data] == ["system", "user", "assistant"]
    assert conversation_text(listed.data[1]) == "my name is Ada"
    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_responses_continue_a_created_conversation(client: OpenAI, gateway: Stack) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "my name is Ada"}]
    )
    first = client.responses.create(
        model="Balanced", input="[sim:recall] who am I?", conversation=conversation.id
    )
    assert first.conversation is not None and first.conversation.id == conversation.id
    assert "my name is Ada" in first.output_text  # the seeded item reached the upstream
    second = client.responses.create(
        model="Balanced", input="[sim:recall] and now?", conversation={"id": conversation.id}
    )
    assert "[sim:recall] who am I?" in second.output_text
    texts = [
        conversation_text(item) for item in client.conversations.items.list(conversation.id, order="asc").data
    ]
    assert texts[0] == "my name is Ada" and texts[-1] == second.output_text
    assert len(gateway.upstream_users(conversation.id)) == 2  # one upstream conversation, two turns


def test_chat_completions_then_responses_continue_one_conversation(client: OpenAI, gateway: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="Balanced", messages=[{"role": "user", "content": "my name is Ada"}]
    )
    conversation_id = raw.headers["X-Conversation-Id"]
    completion = raw.parse()
    by_conversation = client.responses.create(model="Balanced", input="second", conversation=conversation_id)
    assert by_conversation.output_text.endswith("This is turn 2.")
    # A Chat Completions id works as previous_response_id too, and so does the Responses id after it.
    third = client.responses.create(model="Balanced", input="third", previous_response_id=completion.id)
    fourth = client.responses.create(
        model="Balanced", input="[sim:recall] fourth", previous_response_id=third.id
    )
    assert fourth.output_text == "Earlier you said: my name is Ada | second | third"
    assert gateway.upstream_users(conversation_id) == [
        "my name is Ada",
        "second",
        "third",
        "[sim:recall] fourth",
    ]
    back = client.chat.completions.create(
        model="Balanced",
        messages=[{"role": "user", "content": "fifth"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    answer = back.choices[0].message.content
    assert answer is not None and answer.endswith("This is turn 5.")
