"""Hostile bodies for every surface (Chat Completions also has `fuzz_bodies`' finer grammar).

Each surface has a valid base body; a fuzzed body is that base with a few mutations:
a field set to any JSON or to a hostile value, dropped, wrapped in an array, or a new
field added. Hostile values are what broke the gateway before: lone surrogates, nesting
near and past the depth limit, huge numbers, wrong types, and JSON schemas with remote
`$ref`s or catastrophic patterns placed where each surface takes a schema. The raw
bodies are not JSON objects at all (empty, BOM, NaN, 1e400, 5000-deep, NULs...).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import strategies as st

from tests.unit.fuzz_bodies import JSON_ANY, SHORT

LONE = "\ud800"
REMOTE_REF = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/secret.json"}}}
FILE_REF = {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}
CATASTROPHIC = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
BACKREFERENCE = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}
SCHEMAS = st.sampled_from([REMOTE_REF, FILE_REF, CATASTROPHIC, BACKREFERENCE, {"$ref": "#/nowhere"}])


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


HOSTILE = st.one_of(
    st.just(LONE),
    st.text(max_size=6).map(lambda s: s + LONE + s),
    st.integers(40, 70).map(lambda d: _nested(d, "x")),
    st.just(10**400),
    st.just(-(10**30)),
    st.just(1.7e308),
    st.lists(st.just(LONE), min_size=1, max_size=2),
    st.dictionaries(st.just(LONE), SHORT, min_size=1, max_size=1),
    SCHEMAS,
)
VALUES = JSON_ANY | HOSTILE

RAW_BODIES: list[bytes] = [
    b"",
    b"   ",
    b"[]",
    b'"text"',
    b"42",
    b"null",
    b"\xef\xbb\xbf{}",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 1e400}',
    b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"{" * 5000,
    b'{"a": 1, "a": 2}',
    b'{"a": "\\ud800"}',
    b'{"\\udfff": 1}',
    b'{"a": "\x00"}',
    b"\x00\x01\x02",
    b"\xff\xfe{",
    b"{'a': 1}",
    b'{"a": 1,}',
    b'{"a": ' + b"9" * 5000 + b"}",
]


@dataclasses.dataclass(frozen=True)
class Surface:
    """One route: how to call it, a valid body, and where a schema goes (for schema mutations)."""

    name: str
    method: str
    path: str
    base: dict[str, Any]
    openai: bool = True  # False: Anthropic's error shape (no `param`)
    schema_paths: tuple[tuple[str, ...], ...] = ()


MESSAGES = {"model": "copilot", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
SURFACES = [
    Surface(
        "chat",
        "POST",
        "/v1/chat/completions",
        {
            "model": "copilot",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "max_tokens": 16,
        },
        schema_paths=(("tools", 0, "function", "parameters"), ("response_format", "json_schema", "schema")),  # type: ignore[arg-type]
    ),
    Surface(
        "responses",
        "POST",
        "/v1/responses",
        {
            "model": "copilot",
            "input": [{"role": "user", "content": "hi"}],
            "instructions": "be brief",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "metadata": {"k": "v"},
            "store": True,
        },
        schema_paths=(("tools", 0, "parameters"), ("text", "format", "schema")),  # type: ignore[arg-type]
    ),
    Surface(
        "messages",
        "POST",
        "/v1/messages",
        {**MESSAGES, "system": "be brief", "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
        openai=False,
        schema_paths=(("tools", 0, "input_schema"),),  # type: ignore[arg-type]
    ),
    Surface(
        "count_tokens",
        "POST",
        "/v1/messages/count_tokens",
        {**MESSAGES, "system": "be brief", "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
        openai=False,
        schema_paths=(("tools", 0, "input_schema"),),  # type: ignore[arg-type]
    ),
    Surface(
        "conversations.create",
        "POST",
        "/v1/conversations",
        {"items": [{"type": "message", "role": "user", "content": "hi"}], "metadata": {"k": "v"}},
    ),
    Surface("conversations.update", "POST", "/v1/conversations/{conversation}", {"metadata": {"k": "v"}}),
    Surface("images", "POST", "/v1/images/generations", {"prompt": "a cat", "n": 1, "size": "1024x1024"}),
    Surface("admin.keys.create", "POST", "/admin/keys", {"label": "fuzz", "rpm": 5, "models": ["copilot"]}),
    Surface("admin.keys.update", "PATCH", "/admin/keys/{key}", {"label": "fuzz", "rpm": 5}),
    Surface(
        "admin.accounts.create", "POST", "/admin/accounts", {"label": "fuzz", "rpm": 5, "enabled": False}
    ),
    Surface("admin.accounts.update", "PATCH", "/admin/accounts/{account}", {"label": "fuzz", "rpm": 5}),
]


def _set_in(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, surface: Surface) -> dict[str, Any]:
    """The surface's base body with one to three mutations."""
    body = json.loads(json.dumps(surface.base))
    for _ in range(draw(st.integers(1, 3))):
        fields = sorted(body)
        op = draw(st.sampled_from(["set", "set", "hostile", "drop", "wrap", "add", "schema"]))
        if op == "schema" and surface.schema_paths and all(p[0] in body for p in surface.schema_paths):
            try:
                _set_in(body, draw(st.sampled_from(surface.schema_paths)), draw(SCHEMAS))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation changed the shape the path walks
        elif op == "add" or not fields:
            body[draw(SHORT | st.just(LONE))] = draw(VALUES)
        elif op == "drop":
            del body[draw(st.sampled_from(fields))]
        elif op == "wrap":
            name = draw(st.sampled_from(fields))
            body[name] = [body[name]]
        else:
            body[draw(st.sampled_from(fields))] = draw(HOSTILE if op == "hostile" else VALUES)
    return body


def encode(body: dict[str, Any]) -> bytes:
    """JSON text as a client may send it: lone surrogates as `\\ud800` escapes."""
    return json.dumps(body).encode()
