"""Turning a Chat Completions request body into a `ChatRequest`, or a 400 naming the param.

Rules follow OpenAI's: same required fields, same types and ranges, and errors that
name the offending parameter exactly as OpenAI does (`messages[2].content[0].type`),
so SDK users see familiar messages. Unknown fields are accepted and ignored, because
chat front-ends send many (`seed`, `logit_bias`, vendor extras).

Sampling knobs (`temperature`, `top_p`, penalties, `user`) are checked for type and
range and then ignored: Bing offers no such settings, and rejecting them would break
clients that always send them. Parameters that change what the answer means are not
ignored: `tools`, `response_format`, `stop` and the token limits become `TurnOptions`
(`service.tools`), which the worker honours; `n` > 1 and `logprobs` are 400s.

This module is pure: it takes the raw body and the headers and does no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from service.errors import InvalidRequest, NotFound
from service.models import Aliases, find_model
from service.tools.history import fold
from service.tools.openai_params import chat_options

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
INSTRUCTION_ROLES = ("system", "developer")
PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)
_RANGES = {  # param: (minimum, maximum), both inclusive, as OpenAI documents them
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A validated request, reduced to what the gateway acts on.

    `prompt` is the last user message's text; `system` the system/developer texts;
    `history` the earlier turns as `{"role": "user"|"assistant", "content": str}`;
    `messages` every message as `{"role", "content"[, "name"]}` text, for token counting.
    `conversation_param` names where `conversation_id` came from, so a not-found
    error can point at it.
    """

    model: str
    prompt: str
    system: str = ""
    history: tuple[dict[str, str], ...] = ()
    messages: tuple[dict[str, str], ...] = ()
    stream: bool = False
    include_usage: bool = False
    conversation_id: str | None = None
    conversation_param: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`service.tools.options.TurnOptions.to_json()`: tools, structured output, stop, token limit."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 OpenAI sends for an unparseable body."""

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw, parse_constant=reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(PARSE_ERROR, param=None) from None
    if not isinstance(body, dict):
        raise InvalidRequest(PARSE_ERROR, param=None)
    return body


def message_text(content: Any, param: str, *, nullable: bool) -> str:
    """A message's text: string content stripped, or its text parts joined by newlines."""
    if content is None:
        if nullable:
            return ""
        raise _missing(param)
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        raise _wrong_type(param, "one of a string or array of objects", content)
    texts: list[str] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _wrong_type(where, "an object", part)
        kind = part.get("type")
        if kind is None:
            raise _missing(f"{where}.type")
        if kind != "text":
            raise InvalidRequest(
                f"Invalid value: {json.dumps(kind)}. This gateway supports only 'text' content parts.",
                param=f"{where}.type",
                code="invalid_value",
            )
        text = part.get("text")
        if text is None:
            raise _missing(f"{where}.text")
        if not isinstance(text, str):
            raise _wrong_type(f"{where}.text", "a string", text)
        texts.append(text)
    return "\n".join(texts).strip()


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    result: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _wrong_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in ROLES:
            allowed = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
            raise InvalidRequest(
                f"Invalid value: {json.dumps(role)}. Supported values are: {allowed}.",
                param=f"{where}.role",
                code="invalid_value",
            )
        if "content" not in message and role != "assistant":
            raise _missing(f"{where}.content")
        text = message_text(message.get("content"), f"{where}.content", nullable=role == "assistant")
        entry: dict[str, Any] = {"role": role, "content": text}
        if isinstance(message.get("name"), str) and message["name"]:
            entry["name"] = message["name"]
        if role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _missing(f"{where}.tool_call_id")
            entry["tool_call_id"] = call_id
        result.append(entry)
    last = len(result) - 1
    if result[last]["role"] in ("tool", "function"):
        return result  # tool results are the new turn
    if result[last]["role"] != "user":
        raise InvalidRequest(
            "The last message must have role 'user': this gateway answers the last user message.",
            param="messages",
            code="invalid_value",
        )
    if not result[last]["content"]:
        raise InvalidRequest(
            f"Invalid 'messages[{last}].content': the last user message has no text.",
            param=f"messages[{last}].content",
            code="invalid_value",
        )
    return result


def _tool_calls(value: Any, param: str) -> list[dict[str, str]]:
    """An assistant message's `tool_calls`, reduced to (id, name, arguments)."""
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)
    calls = []
    for i, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _missing(f"{param}[{i}].function.name")
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):
            raise _wrong_type(f"{param}[{i}].function.arguments", "a string", arguments)
        calls.append({"id": str(call.get("id") or ""), "name": function["name"], "arguments": arguments})
    return calls


def _check_knobs(body: dict[str, Any]) -> None:
    for param, (low, high) in _RANGES.items():
        value = body.get(param)
        if value is None:
            continue
        if not _is_number(value):
            raise _wrong_type(param, "a decimal", value)
        if not low <= value <= high:
            side = "below minimum" if value < low else "above maximum"
            bound = f">= {low:g}" if value < low else f"<= {high:g}"
            raise InvalidRequest(
                f"Invalid '{param}': decimal {side} value. "
                f"Expected a value {bound}, but got {value} instead.",
                param=param,
                code=f"decimal_{side.replace(' ', '_')}_value",
            )
    for param in ("max_tokens", "max_completion_tokens"):
        value = body.get(param)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(param, "an integer", value)
        if value < 1:
            raise InvalidRequest(
                f"Invalid '{param}': integer below minimum value. "
                f"Expected a value >= 1, but got {value} instead.",
                param=param,
                code="integer_below_min_value",
            )
    n = body.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise _wrong_type("n", "an integer", n)
        if n != 1:
            raise InvalidRequest(
                f"Invalid 'n': this gateway returns exactly one choice, "
                f"so 'n' must be 1, but got {n} instead.",
                param="n",
                code="invalid_value",
            )
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _wrong_type("user", "a string", body["user"])


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    if not isinstance(options, dict):
        raise _wrong_type("stream_options", "an object", options)
    include = options.get("include_usage")
    if include is None:
        include = False
    if not isinstance(include, bool):
        raise _wrong_type("stream_options.include_usage", "a boolean", include)
    return stream, include


def _conversation(body: dict[str, Any], headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    for param in ("conversation_id", "id"):
        value = body.get(param)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _wrong_type(param, "a string", value)
        if value.strip():
            return value.strip(), param
    header = (headers.get("X-Conversation-Id") or "").strip()
    return (header, "X-Conversation-Id") if header else (None, None)


def parse_chat_request(
    raw: bytes,
    headers: Mapping[str, str],
    *,
    upstream: str = "bing",
    aliases: Aliases = (),
    tool_emulation: bool = True,
) -> ChatRequest:
    """Validate a Chat Completions body (and the conversation header) into a `ChatRequest`.

    Raises `InvalidRequest` (400) naming the param, or `NotFound` (404
    `model_not_found`) for a model the catalog does not have.
    """
    body = parse_body(raw)
    model_name = body.get("model")
    if model_name is None:
        raise _missing("model")
    if not isinstance(model_name, str):
        raise _wrong_type("model", "a string", model_name)
    spec = find_model(model_name, upstream, aliases)
    if spec is None:
        raise NotFound(
            f"The model `{model_name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body)
    stream, include_usage = _stream_flags(body)
    _check_knobs(body)
    conversation_id, conversation_param = _conversation(body, headers)
    options = chat_options(body, tool_emulation=tool_emulation)
    system = "\n\n".join(m["content"] for m in messages if m["role"] in INSTRUCTION_ROLES and m["content"])
    turns = fold([m for m in messages if m["role"] not in INSTRUCTION_ROLES])
    return ChatRequest(
        model=spec.id,
        prompt=turns[-1]["content"],
        system=system,
        history=tuple(entry for entry in turns[:-1] if entry["content"]),
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        stream=stream,
        include_usage=include_usage,
        conversation_id=conversation_id,
        conversation_param=conversation_param,
        options=options.to_json(),
    )
