"""OpenAI's Conversations API over the gateway's own conversations: one id for every surface.

    POST /v1/conversations              create (optional initial `items`, `metadata`)
    GET  /v1/conversations/{id}         the conversation object
    POST /v1/conversations/{id}         update its `metadata`
    GET  /v1/conversations/{id}/items   the transcript as message items (`order`, `limit`, `after`)

(`DELETE /v1/conversations/{id}` is in `service.web.http.meta`.) The id (`conv_…`) is the
one Chat Completions returns in `X-Conversation-Id` and accepts as `id` /
`conversation_id`, Responses accepts as `conversation`, and Anthropic clients reach
through history matching, so a conversation started on one surface continues on any
other. Initial items are the transcript a new upstream conversation is seeded with on
the first turn. Conversations are visible only to the key that created them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, g, jsonify

from service.errors import InvalidRequest
from service.state.conversations import Conversation
from service.turns import new_conversation_id
from service.web.http.body import read_body
from service.web.http.extension import gateway
from service.web.http.meta import conversation_not_found
from service.web.http.paging import page
from service.web.http.schema_errors import wrong_type as _wrong_type
from service.web.pipeline.conversation_limits import admit_write, check_room
from service.web.pipeline.request import check_chars, parse_body
from service.web.pipeline.submit import bounds
from service.web.responses.input_items import INSTRUCTION_ROLES, input_item
from service.web.responses.parse import parse_metadata

blueprint = Blueprint("conversations", __name__)

MAX_INITIAL_ITEMS = 20  # as OpenAI limits `items` on create


def conversation_object(conversation: Conversation) -> dict[str, Any]:
    """OpenAI's `conversation` object."""
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": int(conversation.created),
        "metadata": conversation.metadata,
    }


def item_id(conversation_id: str, index: int) -> str:
    """A stable id for the transcript's `index`-th message (the transcript keeps no ids)."""
    return "msg_" + hashlib.sha256(f"{conversation_id}:{index}".encode()).hexdigest()[:32]


def items(conversation: Conversation) -> list[dict[str, Any]]:
    """The transcript, oldest first, as `message` items (the system prompt first, if any)."""
    messages = list(conversation.messages)
    if conversation.system:
        messages.insert(0, {"role": "system", "content": conversation.system})
    return [
        {
            "type": "message",
            "id": item_id(conversation.id, index),
            "status": "completed",
            "role": message["role"],
            "content": [
                {
                    "type": "output_text" if message["role"] == "assistant" else "input_text",
                    "text": message["content"],
                    **({"annotations": [], "logprobs": []} if message["role"] == "assistant" else {}),
                }
            ],
        }
        for index, message in enumerate(messages)
    ]


def _owned(conversation_id: str) -> Conversation:
    conversation = gateway().store.get_owned(conversation_id, g.owner)
    if conversation is None:
        raise conversation_not_found(conversation_id, None)
    return conversation


@blueprint.post("/v1/conversations")
def create_conversation() -> Response:
    """A new conversation of the caller's, seeded with `items` when given."""
    raw = read_body()
    body = parse_body(raw) if raw.strip() else {}
    given = body.get("items") or []
    if not isinstance(given, list):
        raise _wrong_type("items", "an array", given)
    if len(given) > MAX_INITIAL_ITEMS:
        raise InvalidRequest(
            f"Invalid 'items': at most {MAX_INITIAL_ITEMS} items can be added at once.",
            param="items",
            code="array_above_max_length",
        )
    parsed = [entry for i, item in enumerate(given) if (entry := input_item(item, f"items[{i}]")) is not None]
    check_chars(sum(len(m["content"]) for m in parsed), bounds(gateway()), param="items")
    system = "\n\n".join(m["content"] for m in parsed if m["role"] in INSTRUCTION_ROLES and m["content"])
    conversation = Conversation(
        id=new_conversation_id(),
        owner=g.owner,
        model="",
        messages=[m for m in parsed if m["role"] not in INSTRUCTION_ROLES and m["content"]],
        system=system,
        metadata=parse_metadata(body),
    )
    admit_write(gateway())  # the key's rpm and quota, like a turn
    check_room(gateway(), g.owner)  # and KEY_MAX_CONVERSATIONS
    gateway().store.save(conversation)
    return jsonify(conversation_object(conversation))


@blueprint.get("/v1/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    """The caller's conversation object."""
    return jsonify(conversation_object(_owned(conversation_id)))


@blueprint.post("/v1/conversations/<conversation_id>")
def update_conversation(conversation_id: str) -> Response:
    """Replace the conversation's metadata (the only field OpenAI lets a client update)."""
    body = parse_body(read_body())
    if "metadata" not in body:
        raise InvalidRequest(
            "Missing required parameter: 'metadata'.", param="metadata", code="missing_required_parameter"
        )
    metadata = parse_metadata(body)
    conversation = _owned(conversation_id)
    admit_write(gateway())
    # The metadata alone, atomically: a turn saving the transcript meanwhile keeps its turn.
    if not gateway().store.set_metadata(conversation.id, metadata):
        raise conversation_not_found(conversation_id, None)  # deleted since it was read
    conversation.metadata = metadata
    return jsonify(conversation_object(conversation))


@blueprint.get("/v1/conversations/<conversation_id>/items")
def list_items(conversation_id: str) -> Response:
    """The conversation's messages as items, paged as OpenAI does (default newest first)."""
    transcript = items(_owned(conversation_id))
    return page(transcript)
