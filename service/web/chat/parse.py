"""Turning a Chat Completions request body into a `ChatRequest`, or a 400 naming the param.

Rules follow OpenAI's: the same required fields, types, ranges and shapes for every
standard field (`chat.schema`, checked with jsonschema), and errors that name the
offending parameter exactly as OpenAI does (`messages[2].content[0].type`), so SDK
users see familiar messages. Unknown fields are accepted and ignored, because chat
front-ends send vendor extras.

Standard fields the upstream cannot honour are still checked, then accepted when valid
(sampling knobs, `tools`, `response_format`, `seed`, `stop`...): rejecting them would
break clients that always send them. Parameters that change what the answer means are not
ignored: `tools`, `response_format`, `stop` and the token limits become `TurnOptions`
(`service.tools`), which the worker honours; `n` > 1 and `logprobs: true` are 400s.

Size bounds come from settings (`Bounds`) and the upstream: nesting depth and value count, the number of
messages, their total characters, and the upstream's own per-message limit
(`service.limits`), all checked before anything is enqueued.

This module is pure: it takes the raw body and the headers and does no I/O.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from service import images
from service.errors import NotFound
from service.images import ImageInput
from service.limits import check_prompt
from service.models import Aliases, find_model, unknown_model_message
from service.web.chat.schema import SCHEMA
from service.web.http.schema_errors import invalid, raise_first
from service.web.pipeline.request import Bounds, ChatRequest, check_chars, check_count, parse_body

if TYPE_CHECKING:
    from service.web.http.auth import HeaderLookup
from service.tools.history import fold
from service.tools.openai_params import chat_options

INSTRUCTION_ROLES = ("system", "developer")
_FIELD_ORDER = {name: i for i, name in enumerate(SCHEMA["properties"])}


# -- the schema ---------------------------------------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(SCHEMA)


@functools.cache
def _fast_validator() -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(SCHEMA)


def _check_schema(body: dict[str, Any]) -> None:
    """400 unless `body` fits the schema. jsonschema-rs answers "valid" in about a microsecond
    where jsonschema takes 150-300 µs on the way to the first token; anything it does not pass
    (or cannot read: a number beyond 64 bits, a NaN) goes to jsonschema, which decides and names
    the field. It is never the looser of the two: `test_chat_schema_fast_path` holds it to that."""
    try:
        if _fast_validator().is_valid(body):
            return
    except (ValueError, OverflowError):
        pass
    raise_first(_validator().iter_errors(body), _FIELD_ORDER)


# -- what the gateway acts on ----------------------------------------------------------


def message_text(content: Any) -> str:
    """A (schema-valid) message's text: string content stripped, or its text parts joined.

    Each image part shows as an `[image]` line before the text (`images.marked`), the
    form the transcript keeps, so a client re-sending its history still matches it.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    text = "\n".join(part["text"] for part in content if part["type"] == "text").strip()
    return images.marked(text, sum(1 for part in content if part["type"] == "image_url"))


def _images(body: dict[str, Any], bounds: Bounds, upstream: str) -> tuple[ImageInput, ...]:
    """The last message's image parts, checked (`service.images`); 400s name the part."""
    index = len(body["messages"]) - 1
    content = body["messages"][index].get("content")
    if not isinstance(content, list):
        return ()
    found: list[ImageInput] = []
    for j, part in enumerate(content):
        if part["type"] != "image_url":
            continue
        name = f"messages[{index}].content[{j}].image_url"
        if upstream == "bing" and found:
            raise invalid(
                name,
                f"Invalid '{name}': Bing ChatHub takes one image per message (UPSTREAM=bing); "
                "send the others in separate messages.",
                "too_many_images",
            )
        images.check_count(len(found) + 1, name, bounds.images)
        found.append(images.parse_image_url(part["image_url"]["url"], name, bounds.images))
    return tuple(found)


def _messages(body: dict[str, Any], bounds: Bounds) -> list[dict[str, Any]]:
    messages = body["messages"]
    check_count(len(messages), bounds)
    result: list[dict[str, Any]] = []
    total = 0
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part["type"] not in ("text", "refusal", "image_url"):
                    raise invalid(
                        f"messages[{i}].content[{j}].type",
                        f"Invalid value: {json.dumps(part['type'])}. "
                        "This gateway supports only 'text' and 'image_url' content parts.",
                    )
        entry: dict[str, Any] = {"role": message["role"], "content": message_text(content)}
        if isinstance(message.get("name"), str) and message["name"]:
            entry["name"] = message["name"]
        total += len(entry["content"]) + len(entry.get("name", ""))
        check_chars(total, bounds)
        if message["role"] == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"])
        if message["role"] == "tool":
            entry["tool_call_id"] = message["tool_call_id"]
        result.append(entry)
    last = len(result) - 1
    if result[last]["role"] in ("tool", "function"):
        return result  # tool results are the new turn
    if result[last]["role"] != "user":
        raise invalid(
            "messages", "The last message must have role 'user': this gateway answers the last user message."
        )
    if not result[last]["content"]:
        raise invalid(
            f"messages[{last}].content",
            f"Invalid 'messages[{last}].content': the last user message has no text.",
        )
    return result


def _tool_calls(value: list[dict[str, Any]]) -> list[dict[str, str]]:
    """An assistant message's (schema-valid) function `tool_calls`, reduced to (id, name, arguments)."""
    return [
        {
            "id": str(call.get("id") or ""),
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
        }
        for call in value
        if isinstance(call.get("function"), dict)
    ]


def _check_semantics(body: dict[str, Any]) -> None:
    """Rules beyond the schema: values that would change what the answer is."""
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid(
            "n",
            f"Invalid 'n': this gateway returns exactly one choice, so 'n' must be 1, but got {n} instead.",
        )
    if body.get("logprobs") is True:
        raise invalid(
            "logprobs",
            "Invalid 'logprobs': this gateway cannot return log probabilities "
            "(the upstream does not expose them); omit it or set it to false.",
        )
    if body.get("top_logprobs") is not None:
        raise invalid(
            "top_logprobs",
            "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used, "
            "and this gateway cannot return log probabilities.",
        )


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """`stream`, and `include_usage` from `stream_options`, which a non-stream request may send
    and have ignored (LobeChat always sends it; OpenAI's own check is laxer than its docs)."""
    stream = bool(body.get("stream"))
    options = body.get("stream_options") or {}
    return stream, stream and bool(options.get("include_usage"))


def _conversation(body: dict[str, Any], headers: HeaderLookup) -> tuple[str | None, str | None]:
    for param in ("conversation_id", "id"):
        value = body.get(param)
        if isinstance(value, str) and value.strip():
            return value.strip(), param
    header = (headers.get("X-Conversation-Id") or "").strip()
    return (header, "X-Conversation-Id") if header else (None, None)


def parse_chat_request(
    raw: bytes,
    headers: HeaderLookup,
    *,
    upstream: str = "bing",
    bounds: Bounds | None = None,
    aliases: Aliases = (),
    tool_emulation: bool = True,
) -> ChatRequest:
    """Validate a Chat Completions body (and the conversation header) into a `ChatRequest`.

    Raises `InvalidRequest` (400) naming the param, or `NotFound` (404
    `model_not_found`) for a model the catalog does not have.
    """
    bounds = bounds or Bounds()
    body = parse_body(raw)
    _check_schema(body)
    spec = find_model(body["model"], upstream, aliases)
    if spec is None:
        raise NotFound(
            unknown_model_message(body["model"]),
            param="model",
            code="model_not_found",
        )
    messages = _messages(body, bounds)
    _check_semantics(body)
    found = _images(body, bounds, upstream)
    # The new user message goes upstream as its text alone (its images travel as images).
    last = {**messages[-1], "content": message_text(_texts(body["messages"][-1].get("content")))}
    turns = fold([m for m in [*messages[:-1], last] if m["role"] not in INSTRUCTION_ROLES])
    prompt = turns[-1]["content"]
    check_prompt(prompt, upstream)
    stream, include_usage = _stream_flags(body)
    conversation_id, conversation_param = _conversation(body, headers)
    options = chat_options(body, tool_emulation=tool_emulation)
    system = "\n\n".join(m["content"] for m in messages if m["role"] in INSTRUCTION_ROLES and m["content"])
    return ChatRequest(
        model=spec.id,
        prompt=prompt,
        system=system,
        history=tuple(entry for entry in turns[:-1] if entry["content"]),
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        stream=stream,
        include_usage=include_usage,
        conversation_id=conversation_id,
        conversation_param=conversation_param,
        images=found,
        options=options.to_json(),
        store_completion=body.get("store") is True,
        metadata=body.get("metadata") or None,
    )


def _texts(content: Any) -> Any:
    """Content without its image parts: the text that goes upstream as the prompt."""
    return [part for part in content if part["type"] != "image_url"] if isinstance(content, list) else content
