"""Turning a Chat Completions request body into a `ChatRequest`, or a 400 naming the param.

Rules follow OpenAI's: the same required fields, types, ranges and shapes for every
standard field (`chat_schema`, checked with jsonschema), and errors that name the
offending parameter exactly as OpenAI does (`messages[2].content[0].type`), so SDK
users see familiar messages. Unknown fields are accepted and ignored, because chat
front-ends send vendor extras.

Standard fields the upstream cannot honour are still checked, then accepted when valid
(sampling knobs, `tools`, `response_format`, `seed`, `stop`...): rejecting them would
break clients that always send them. Those whose honouring would change what the
answer *is* get a 400 naming them instead: `n` > 1 and `logprobs: true`.

Size bounds come from settings (`Bounds`) and the upstream: the nesting depth, the number of
messages, their total characters, and the upstream's own per-message limit
(`service.limits`), all checked before anything is enqueued.

This module is pure: it takes the raw body and the headers and does no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from service.errors import InvalidRequest, NotFound
from service.limits import check_prompt
from service.models import find_model
from service.web.chat_schema import SCHEMA

INSTRUCTION_ROLES = ("system", "developer")
PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; OpenAI's own schemas need far less."""
TOO_DEEP = f"The JSON body of your request nests arrays or objects more than {MAX_DEPTH} levels deep."
MAX_VALUES = 25_000
"""Most JSON values (every string, number, array, object...) one body may hold.

Validation costs tens of microseconds per value on the web tier's event loop, so a
4 MiB body of tiny values could hold the loop for seconds; a 2048-message chat with
tools needs a fraction of this.
"""
MAX_ERRORS = 64
"""Schema errors looked at before choosing the one to report (a bad array may hold thousands)."""
_FIELD_ORDER = {name: i for i, name in enumerate(SCHEMA["properties"])}
_TYPE_PHRASES = {
    "string": "a string",
    "array": "an array",
    "object": "an object",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
}


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Size limits a request must stay within (MAX_MESSAGES, MAX_INPUT_CHARS)."""

    max_messages: int = 2048
    max_input_chars: int = 400_000


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


def _invalid(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 OpenAI sends for an unparseable body.

    Nesting beyond MAX_DEPTH is a 400 too: Python's parser gives up with a
    RecursionError somewhere near a thousand levels, and any recursive walk of a
    body just under that would fail later, further from the cause.
    """

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw, parse_constant=reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(PARSE_ERROR, param=None) from None
    except RecursionError:
        raise InvalidRequest(TOO_DEEP, param=None, code="invalid_value") from None
    if not isinstance(body, dict):
        raise InvalidRequest(PARSE_ERROR, param=None)
    _check_shape(body)
    return body


def _check_shape(body: dict[str, Any]) -> None:
    """400 if the body nests deeper than MAX_DEPTH or holds more than MAX_VALUES values.

    Iterative, so a deep body can never exhaust the stack; the field that pushes the
    count over the limit is named.
    """
    count = 0
    for name, value in body.items():
        stack: list[tuple[Any, int]] = [(value, 2)]
        while stack:
            item, depth = stack.pop()
            count += 1
            if count > MAX_VALUES:
                raise InvalidRequest(
                    f"Invalid '{name}': the request body holds more than {MAX_VALUES} JSON values "
                    "(strings, numbers, arrays, objects...); this gateway accepts no more.",
                    param=name,
                    code="invalid_value",
                )
            if isinstance(item, dict | list):
                if depth > MAX_DEPTH:
                    raise InvalidRequest(TOO_DEEP, param=None, code="invalid_value")
                children: Iterable[Any] = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)


# -- the schema, and its errors in OpenAI's words ------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(SCHEMA)


def param_name(path: Iterable[Any]) -> str:
    """`["messages", 2, "content", 0, "type"]` → `messages[2].content[0].type`."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _check_schema(body: dict[str, Any]) -> None:
    # Errors come lazily in the schema's order (required fields, then each documented field).
    errors = list(itertools.islice(_validator().iter_errors(body), MAX_ERRORS))
    if not errors:
        return

    # One error, as OpenAI reports: the first field in the documented order, then the most relevant.
    def field(error: ValidationError) -> int:
        top = error.absolute_path[0] if error.absolute_path else _missing_name(error) or ""
        return _FIELD_ORDER.get(str(top), len(_FIELD_ORDER))

    first = min(errors, key=field)  # the earliest of the earliest field: `messages[0]` before `[31]`
    where = list(first.absolute_path)[:2]
    alternatives = [e for e in errors if field(e) == field(first) and list(e.absolute_path)[:2] == where]
    chosen = best_match(alternatives)
    raise _translate(chosen if chosen is not None else first)


def _missing_name(error: ValidationError) -> str | None:
    if error.validator != "required" or not isinstance(error.instance, dict):
        return None
    return next((name for name in error.validator_value if name not in error.instance), None)


def _translate(error: ValidationError) -> InvalidRequest:
    """One jsonschema error as the 400 OpenAI would send for it."""
    param = param_name(error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = _missing_name(error) or ""
        return _missing(f"{param}.{missing}" if param else missing)
    if kind == "type":
        phrase = error.schema.get("x-expected")
        if phrase is None:
            kinds = [k for k in (expected if isinstance(expected, list) else [expected]) if k != "null"]
            phrase = " or ".join(_TYPE_PHRASES.get(k, k) for k in kinds)
        return _wrong_type(param, str(phrase), value)
    if kind in ("enum", "const"):
        allowed = [f"'{v}'" for v in ([expected] if kind == "const" else expected)]
        listed = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + f", and {allowed[-1]}"
        return _invalid(param, f"Invalid value: {_short(value)}. Supported values are: {listed}.")
    if kind in ("minimum", "maximum"):
        declared = error.schema.get("type")
        number = (
            "decimal" if "number" in (declared if isinstance(declared, list) else [declared]) else "integer"
        )
        below = kind == "minimum"
        side = "below minimum" if below else "above maximum"
        code = (
            f"integer_{'below_min' if below else 'above_max'}_value"
            if number == "integer"
            else f"decimal_{side.replace(' ', '_')}_value"
        )
        bound = f"{'>=' if below else '<='} {expected:g}"
        return _invalid(
            param,
            f"Invalid '{param}': {number} {side} value. Expected a value {bound}, but got {value} instead.",
            code,
        )
    if kind == "minItems" and not value:
        return _invalid(
            param,
            f"Invalid '{param}': empty array. Expected an array with minimum length {expected}, "
            "but got an empty array instead.",
            "empty_array",
        )
    if kind == "maxItems":
        return _invalid(
            param,
            f"Invalid '{param}': array too long. Expected an array with maximum length {expected}, "
            f"but got an array with length {len(value)} instead.",
            "array_above_max_length",
        )
    if kind == "maxProperties":
        return _invalid(
            param,
            f"Invalid '{param}': too many properties. Expected an object with at most {expected} "
            f"properties, but got an object with {len(value)} properties instead.",
            "object_above_max_properties",
        )
    if kind == "maxLength":
        where = "a key of " if "propertyNames" in error.schema_path else ""
        return _invalid(
            param,
            f"Invalid '{param}': {where}string too long. Expected a string with maximum length {expected}, "
            f"but got a string with length {len(value)} instead.",
            "string_above_max_length",
        )
    if kind == "pattern":
        where = f"key {_short(value)} of " if "propertyNames" in error.schema_path else ""
        return _invalid(
            param,
            f"Invalid '{param}': {where}string does not match pattern. "
            f"Expected a string that matches the pattern '{expected}'.",
        )
    return _invalid(param, f"Invalid value for '{param}': {error.message}")


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- what the gateway acts on ----------------------------------------------------------


def message_text(content: Any) -> str:
    """A (schema-valid) message's text: string content stripped, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    return "\n".join(part["text"] for part in content if part["type"] == "text").strip()


def _messages(body: dict[str, Any], bounds: Bounds) -> list[dict[str, str]]:
    messages = body["messages"]
    if len(messages) > bounds.max_messages:
        raise _invalid(
            "messages",
            f"Invalid 'messages': array too long. Expected an array with maximum length "
            f"{bounds.max_messages}, but got an array with length {len(messages)} instead.",
            "array_above_max_length",
        )
    result: list[dict[str, str]] = []
    total = 0
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part["type"] not in ("text", "refusal"):
                    raise _invalid(
                        f"messages[{i}].content[{j}].type",
                        f"Invalid value: {json.dumps(part['type'])}. "
                        "This gateway supports only 'text' content parts.",
                    )
        entry = {"role": message["role"], "content": message_text(content)}
        if isinstance(message.get("name"), str) and message["name"]:
            entry["name"] = message["name"]
        total += len(entry["content"]) + len(entry.get("name", ""))
        if total > bounds.max_input_chars:
            raise _invalid(
                "messages",
                f"Your messages are longer than this gateway accepts: at most {bounds.max_input_chars} "
                "characters of message text per request (MAX_INPUT_CHARS). "
                "Please reduce the length of the messages.",
                "context_length_exceeded",
            )
        result.append(entry)
    last = len(result) - 1
    if result[last]["role"] != "user":
        raise _invalid(
            "messages", "The last message must have role 'user': this gateway answers the last user message."
        )
    if not result[last]["content"]:
        raise _invalid(
            f"messages[{last}].content",
            f"Invalid 'messages[{last}].content': the last user message has no text.",
        )
    return result


def _check_semantics(body: dict[str, Any]) -> None:
    """Rules beyond the schema: values that would change what the answer is."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid(
            "n",
            f"Invalid 'n': this gateway returns exactly one choice, so 'n' must be 1, but got {n} instead.",
        )
    if body.get("logprobs") is True:
        raise _invalid(
            "logprobs",
            "Invalid 'logprobs': this gateway cannot return log probabilities "
            "(the upstream does not expose them); omit it or set it to false.",
        )
    if body.get("top_logprobs") is not None:
        raise _invalid(
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


def _conversation(body: dict[str, Any], headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    for param in ("conversation_id", "id"):
        value = body.get(param)
        if isinstance(value, str) and value.strip():
            return value.strip(), param
    header = (headers.get("X-Conversation-Id") or "").strip()
    return (header, "X-Conversation-Id") if header else (None, None)


def parse_chat_request(
    raw: bytes,
    headers: Mapping[str, str],
    *,
    upstream: str = "bing",
    bounds: Bounds | None = None,
) -> ChatRequest:
    """Validate a Chat Completions body (and the conversation header) into a `ChatRequest`.

    Raises `InvalidRequest` (400) naming the param, or `NotFound` (404
    `model_not_found`) for a model the catalog does not have.
    """
    bounds = bounds or Bounds()
    body = parse_body(raw)
    _check_schema(body)
    spec = find_model(body["model"], upstream)
    if spec is None:
        raise NotFound(
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body, bounds)
    _check_semantics(body)
    check_prompt(messages[-1]["content"], upstream)
    stream, include_usage = _stream_flags(body)
    conversation_id, conversation_param = _conversation(body, headers)
    system = "\n\n".join(m["content"] for m in messages if m["role"] in INSTRUCTION_ROLES and m["content"])
    history = tuple(_history_entry(m) for m in messages[:-1] if m["role"] not in INSTRUCTION_ROLES)
    return ChatRequest(
        model=spec.id,
        prompt=messages[-1]["content"],
        system=system,
        history=tuple(entry for entry in history if entry["content"]),
        messages=tuple(messages),
        stream=stream,
        include_usage=include_usage,
        conversation_id=conversation_id,
        conversation_param=conversation_param,
    )


def _history_entry(message: dict[str, str]) -> dict[str, str]:
    # Bing has no tool role: a tool's output is shown to it as text the user supplied.
    if message["role"] in ("tool", "function"):
        label = f"Output of {message['name']}" if message.get("name") else "Tool output"
        text = f"{label}:\n{message['content']}" if message["content"] else ""
        return {"role": "user", "content": text}
    return {"role": message["role"], "content": message["content"]}
