"""OpenAI's Chat Completions request body as a JSON Schema (draft 2020-12).

Every standard field the API documents is here with the type, range and shape
OpenAI validates, so a mistyped field gets the same 400 naming its `param` whether the
upstream can honour the field or not. Unknown fields stay allowed (chat front-ends
send vendor extras). Rules a schema cannot say well — the last message must be the
user's, `n` must be 1, `logprobs` cannot be honoured, size limits from settings — are
checked by `validation` after this schema passes.

`x-expected` is our own keyword: how a type error describes the expected type when
the schema allows several ("one of a string or array of objects").
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
NAME_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_BOOL = {"type": ["boolean", "null"]}
_OBJECT = {"type": "object"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*kinds, "null"]}


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": low, "maximum": high}


def _enum(*values: str, nullable: bool = True) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "enum": list(values)}


def _when(field: str, value: str, then: dict[str, Any]) -> dict[str, Any]:
    """`then` applies to objects whose `field` is `value` (a discriminated union)."""
    return {"if": {"required": [field], "properties": {field: {"const": value}}}, "then": then}


def _object(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


# -- content parts -----------------------------------------------------------------

_PARTS = {
    "text": _object(["text"], text=_STRING),
    "image_url": _object(
        ["image_url"],
        image_url=_object(["url"], url=_STRING, detail=_enum("auto", "low", "high", nullable=False)),
    ),
    "input_audio": _object(
        ["input_audio"],
        input_audio=_object(["data", "format"], data=_STRING, format=_enum("wav", "mp3", nullable=False)),
    ),
    "file": _object(["file"], file=_object(file_data=_STRING, file_id=_STRING, filename=_STRING)),
    "refusal": _object(["refusal"], refusal=_STRING),
}


def _content(*kinds: str, nullable: bool = False) -> dict[str, Any]:
    part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": list(kinds)}},
        "allOf": [_when("type", kind, _PARTS[kind]) for kind in kinds],
    }
    types = ["string", "array", "null"] if nullable else ["string", "array"]
    expected = "one of a string or array of objects" + (" or null" if nullable else "")
    return {"type": types, "x-expected": expected, "items": part}


# -- messages ------------------------------------------------------------------------

_TOOL_CALL = _object(
    ["id", "type"],
    id=_STRING,
    type=_enum("function", "custom", nullable=False),
    function=_object(["name", "arguments"], name=_STRING, arguments=_STRING),
    custom=_object(["name", "input"], name=_STRING, input=_STRING),
)
_TOOL_CALL["allOf"] = [
    _when("type", "function", {"required": ["function"]}),
    _when("type", "custom", {"required": ["custom"]}),
]

_ROLE_RULES = {
    "system": _object(["content"], content=_content("text"), name=_STRING),
    "developer": _object(["content"], content=_content("text"), name=_STRING),
    "user": _object(["content"], content=_content("text", "image_url", "input_audio", "file"), name=_STRING),
    "assistant": _object(
        content=_content("text", "refusal", nullable=True),
        name=_STRING,
        refusal=_NULLABLE_STRING,
        tool_calls={"type": ["array", "null"], "items": _TOOL_CALL},
        function_call=_nullable(_object(["name", "arguments"], name=_STRING, arguments=_STRING)),
        audio=_nullable(_object(["id"], id=_STRING)),
    ),
    "tool": _object(["content", "tool_call_id"], content=_content("text"), tool_call_id=_STRING),
    "function": _object(["content", "name"], content=_NULLABLE_STRING, name=_STRING),
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "string", "enum": list(ROLES)}},
    "allOf": [_when("role", role, rules) for role, rules in _ROLE_RULES.items()],
}

# -- tools -------------------------------------------------------------------------

_FUNCTION = _object(
    ["name"],
    name={"type": "string", "pattern": NAME_PATTERN},
    description=_STRING,
    parameters=_OBJECT,
    strict=_NULLABLE_BOOL,
)
_TOOL = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["function", "custom"]},
        "function": _FUNCTION,
        "custom": _object(
            ["name"], name={"type": "string", "pattern": NAME_PATTERN}, description=_STRING, format=_OBJECT
        ),
    },
    "allOf": [
        _when("type", "function", {"required": ["function"]}),
        _when("type", "custom", {"required": ["custom"]}),
    ],
}
_NAMED = _object(["name"], name=_STRING)
_TOOL_CHOICE_OBJECT = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["function", "custom", "allowed_tools"]},
        "function": _NAMED,
        "custom": _NAMED,
        "allowed_tools": _object(
            ["mode", "tools"], mode=_enum("auto", "required", nullable=False), tools={"type": "array"}
        ),
    },
    "allOf": [
        _when("type", "function", {"required": ["function"]}),
        _when("type", "custom", {"required": ["custom"]}),
        _when("type", "allowed_tools", {"required": ["allowed_tools"]}),
    ],
}


def _string_or_object(strings: list[str], obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": ["string", "object", "null"],
        "x-expected": "one of a string or object",
        "if": {"type": "string"},
        "then": {"enum": strings},
        "else": obj,
    }


_RESPONSE_FORMAT = {
    "type": ["object", "null"],
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": _object(
            ["name"],
            name={"type": "string", "pattern": NAME_PATTERN},
            description=_STRING,
            schema=_OBJECT,
            strict=_NULLABLE_BOOL,
        ),
    },
    "allOf": [_when("type", "json_schema", {"required": ["json_schema"]})],
}

_METADATA = {
    "type": ["object", "null"],
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _STRING,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": _NULLABLE_BOOL,
        "stream_options": _nullable(
            _object(include_usage=_NULLABLE_BOOL, include_obfuscation=_NULLABLE_BOOL)
        ),
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "stop": {
            "type": ["string", "array", "null"],
            "x-expected": "one of a string or array of strings",
            "maxItems": 4,
            "items": _STRING,
        },
        "response_format": _RESPONSE_FORMAT,
        "tools": {"type": ["array", "null"], "maxItems": 128, "items": _TOOL},
        "tool_choice": _string_or_object(["none", "auto", "required"], _TOOL_CHOICE_OBJECT),
        "parallel_tool_calls": _NULLABLE_BOOL,
        "functions": {"type": ["array", "null"], "maxItems": 128, "items": _FUNCTION},
        "function_call": _string_or_object(["none", "auto"], _NAMED),
        "logit_bias": {
            "type": ["object", "null"],
            "propertyNames": {"pattern": "^-?[0-9]+$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        },
        "logprobs": _NULLABLE_BOOL,
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "seed": {"type": ["integer", "null"]},
        "user": _STRING,
        "metadata": _METADATA,
        "store": _NULLABLE_BOOL,
        "modalities": {"type": ["array", "null"], "items": _enum("text", "audio", nullable=False)},
        "reasoning_effort": _enum("none", "minimal", "low", "medium", "high", "xhigh"),
        "verbosity": _enum("low", "medium", "high"),
        "service_tier": _enum("auto", "default", "flex", "scale", "priority"),
        "prediction": _nullable(
            _object(["type", "content"], type=_enum("content", nullable=False), content=_content("text"))
        ),
        "audio": _nullable(
            _object(
                ["voice", "format"],
                voice=_STRING,
                format=_enum("wav", "aac", "mp3", "flac", "opus", "pcm16", nullable=False),
            )
        ),
        "web_search_options": _nullable(
            _object(
                search_context_size=_enum("low", "medium", "high", nullable=False),
                user_location=_nullable(
                    _object(
                        ["type", "approximate"],
                        type=_enum("approximate", nullable=False),
                        approximate=_object(city=_STRING, country=_STRING, region=_STRING, timezone=_STRING),
                    )
                ),
            )
        ),
        "prompt_cache_key": _STRING,
        "prompt_cache_retention": _enum("in-memory", "24h"),
        "safety_identifier": _STRING,
        "conversation_id": _NULLABLE_STRING,
        "id": _NULLABLE_STRING,
    },
}
