"""The door's check of a JSON schema a client sends (tool parameters, structured output).

Before anything is enqueued, each schema must be

- small: at most MAX_SCHEMA_CHARS as JSON, MAX_SCHEMA_DEPTH deep, MAX_SCHEMA_KEYWORDS keys;
- self-contained: every `$ref` (`$dynamicRef`, `$recursiveRef`) is a fragment (`#...`)
  that resolves inside the schema itself. The worker's registry never retrieves
  (`schema_check`), so an outside reference could only fail there; here it is a 400
  naming the parameter, and no outside address is ever contacted;
- linear to match: every `pattern` and `patternProperties` key compiles under RE2, the
  engine the worker matches with (no backreferences or lookaround);
- free of `unevaluatedProperties` beside `patternProperties`, the one pair jsonschema
  evaluates with Python's backtracking `re` whatever the keyword functions are.

Errors are `InvalidRequest` naming the parameter (`tools[0].function.parameters`,
`response_format.json_schema.schema`, ...) and where in the schema the fault is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import re2
from referencing import Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from service.errors import InvalidRequest
from service.tools import schema_check

MAX_SCHEMA_CHARS = 32_768
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_KEYWORDS = 2_000
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
DATA_KEYWORDS = frozenset(("enum", "const", "default", "examples", "example"))
"""Keywords whose values are data, not schemas: a `$ref` or `pattern` inside them means nothing."""


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {message}", param=param, code="invalid_value")


def _walk(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], int]]:
    """Every object in schema positions: (its path inside the schema, the object, its depth)."""
    stack: list[tuple[str, Any, int]] = [("", schema, 1)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, list):
            stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))
        elif isinstance(item, dict):
            yield path, item, depth
            stack.extend(
                (f"{path}.{key}" if path else str(key), child, depth + 1)
                for key, child in item.items()
                if key not in DATA_KEYWORDS and isinstance(child, dict | list)
            )


def check(schema: Any, param: str) -> None:
    """400 naming `param` unless `schema` is small, self-contained and RE2-matchable."""
    if not isinstance(schema, dict):
        return  # the surfaces' own shape checks name a non-object schema
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise _bad(param, f"the schema is longer than {MAX_SCHEMA_CHARS} characters as JSON.")
    keywords = 0
    resolver = _resolver(schema)
    uses = {"patternProperties": False, "unevaluatedProperties": False}
    for path, node, depth in _walk(schema):
        where = f"{param}.{path}" if path else param
        if depth > MAX_SCHEMA_DEPTH:
            raise _bad(param, f"the schema nests more than {MAX_SCHEMA_DEPTH} levels deep (at {where}).")
        keywords += len(node)
        if keywords > MAX_SCHEMA_KEYWORDS:
            raise _bad(param, f"the schema holds more than {MAX_SCHEMA_KEYWORDS} keywords.")
        for name in uses:
            uses[name] = uses[name] or name in node
        _check_refs(node, where, param, resolver)
        _check_patterns(node, where, param)
    if all(uses.values()):
        raise _bad(
            param,
            "this gateway does not accept 'unevaluatedProperties' together with 'patternProperties' "
            "in one schema.",
        )


def _resolver(schema: Mapping[str, Any]) -> Any:
    draft = schema_check.draft_of(schema)
    specification = specification_with(draft.META_SCHEMA.get("$schema", ""), default=DRAFT202012)
    resource = Resource.from_contents(schema, default_specification=specification)
    uri = resource.id() or ""
    return schema_check.REGISTRY.with_resource(uri, resource).resolver(base_uri=uri)


def _check_refs(node: Mapping[str, Any], where: str, param: str, resolver: Any) -> None:
    for keyword in REF_KEYWORDS:
        ref = node.get(keyword)
        if not isinstance(ref, str):
            continue
        if not ref.startswith("#"):
            raise _bad(
                param,
                f"{keyword} {json.dumps(ref)[:200]} (at {where}) points outside the schema; this gateway "
                "resolves only references inside the schema ('#/$defs/...') and fetches nothing.",
            )
        try:
            resolver.lookup(ref)
        except (Unresolvable, LookupError, RecursionError):
            raise _bad(
                param, f"{keyword} {json.dumps(ref)[:200]} (at {where}) does not resolve inside the schema."
            ) from None


def _check_patterns(node: Mapping[str, Any], where: str, param: str) -> None:
    found: list[tuple[str, Any]] = []
    if isinstance(node.get("pattern"), str):
        found.append((f"{where}.pattern", node["pattern"]))
    if isinstance(node.get("patternProperties"), dict):
        found.extend((f"{where}.patternProperties", key) for key in node["patternProperties"])
    for location, pattern in found:
        try:
            schema_check.compiled(pattern)
        except re2.error:
            raise _bad(
                param,
                f"the pattern {json.dumps(pattern)[:200]} (at {location}) is not supported: this gateway "
                "matches patterns with RE2 (no backreferences or lookaround).",
            ) from None
