"""jsonschema's validation errors as the 400 OpenAI would send, naming the param its way.

OpenAI reports one error per request, for the first offending field, worded like
`Invalid type for 'stop': expected one of a string or array of strings, but got integer
instead.` with `param` as a path (`messages[2].content[0].type`). `raise_first` picks
that error out of a schema's errors and `translate` words it; any API surface with a
JSON Schema of its own (Chat Completions, Responses, Anthropic Messages) can use them.

Our schemas may carry one keyword of our own, `x-expected`: how a type error describes
the expected type when the schema allows several ("one of a string or array of objects").
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jsonschema.exceptions import ValidationError, best_match

from service.errors import InvalidRequest

MAX_ERRORS = 64
"""Schema errors looked at before choosing the one to report (a bad array may hold thousands)."""
TYPE_PHRASES = {
    "string": "a string",
    "array": "an array",
    "object": "an object",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
}


def type_name(value: Any) -> str:
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


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def param_name(path: Iterable[Any]) -> str:
    """`["messages", 2, "content", 0, "type"]` → `messages[2].content[0].type`."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def raise_first(errors: Iterable[ValidationError], field_order: Mapping[str, int]) -> None:
    """Raise the 400 for the error OpenAI would report, if there is any error.

    `errors` come lazily in the schema's order; at most MAX_ERRORS are looked at (a bad
    array may hold thousands). The first field in `field_order` wins, its earliest
    element (`messages[0]` before `messages[31]`), then jsonschema's most relevant error
    among the alternatives there.
    """
    looked_at = list(itertools.islice(errors, MAX_ERRORS))
    if not looked_at:
        return

    def field(error: ValidationError) -> int:
        top = error.absolute_path[0] if error.absolute_path else _missing_name(error) or ""
        return field_order.get(str(top), len(field_order))

    first = min(looked_at, key=field)
    where = list(first.absolute_path)[:2]
    alternatives = [e for e in looked_at if field(e) == field(first) and list(e.absolute_path)[:2] == where]
    chosen = best_match(alternatives)
    raise translate(chosen if chosen is not None else first)


def _missing_name(error: ValidationError) -> str | None:
    if error.validator != "required" or not isinstance(error.instance, dict):
        return None
    required: list[str] = _parts(error)[1]
    return next((name for name in required if name not in error.instance), None)


def _parts(error: ValidationError) -> tuple[Any, Any, Any, Mapping[str, Any]]:
    """The error's keyword, that keyword's value, the offending instance, and the schema holding it.

    jsonschema fills all four on every error a validator yields (its stubs also allow `Unset`,
    for errors built by hand); a keyword's value and an instance are any JSON, hence `Any`.
    The schema is a boolean only for a `false` subschema, whose keyword is None.
    """
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    return error.validator, error.validator_value, error.instance, schema


def translate(error: ValidationError) -> InvalidRequest:
    """One jsonschema error as the 400 OpenAI would send for it."""
    param = param_name(error.absolute_path)
    words = _WORDING.get(error.validator)
    worded = words(error, param) if words is not None else None
    return worded or invalid(param, f"Invalid value for '{param}': {error.message}")


def _required(error: ValidationError, param: str) -> InvalidRequest:
    name = _missing_name(error) or ""
    return missing(f"{param}.{name}" if param else name)


def _type(error: ValidationError, param: str) -> InvalidRequest:
    _kind, expected, value, schema = _parts(error)
    phrase = schema.get("x-expected")
    if phrase is None:
        kinds = [k for k in (expected if isinstance(expected, list) else [expected]) if k != "null"]
        phrase = " or ".join(TYPE_PHRASES.get(k, k) for k in kinds)
    return wrong_type(param, str(phrase), value)


def _choice(error: ValidationError, param: str) -> InvalidRequest:
    kind, expected, value, _schema = _parts(error)
    allowed = [f"'{v}'" for v in ([expected] if kind == "const" else expected)]
    listed = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + f", and {allowed[-1]}"
    return invalid(param, f"Invalid value: {_short(value)}. Supported values are: {listed}.")


def _bound(error: ValidationError, param: str) -> InvalidRequest:
    kind, expected, value, schema = _parts(error)
    declared = schema.get("type")
    number = "decimal" if "number" in (declared if isinstance(declared, list) else [declared]) else "integer"
    below = kind == "minimum"
    side = "below minimum" if below else "above maximum"
    code = (
        f"integer_{'below_min' if below else 'above_max'}_value"
        if number == "integer"
        else f"decimal_{side.replace(' ', '_')}_value"
    )
    bound = f"{'>=' if below else '<='} {expected:g}"
    return invalid(
        param,
        f"Invalid '{param}': {number} {side} value. Expected a value {bound}, but got {value} instead.",
        code,
    )


def _min_items(error: ValidationError, param: str) -> InvalidRequest | None:
    _kind, expected, value, _schema = _parts(error)
    if value:  # only an empty array has OpenAI's wording
        return None
    return invalid(
        param,
        f"Invalid '{param}': empty array. Expected an array with minimum length {expected}, "
        "but got an empty array instead.",
        "empty_array",
    )


_OVER_MAX = {
    "maxItems": (
        "array too long. Expected an array with maximum length {expected}, "
        "but got an array with length {size} instead.",
        "array_above_max_length",
    ),
    "maxProperties": (
        "too many properties. Expected an object with at most {expected} "
        "properties, but got an object with {size} properties instead.",
        "object_above_max_properties",
    ),
    "maxLength": (
        "{where}string too long. Expected a string with maximum length {expected}, "
        "but got a string with length {size} instead.",
        "string_above_max_length",
    ),
}
"""OpenAI's wording of an array, object or string over its maximum size, and its code."""


def _over_max(error: ValidationError, param: str) -> InvalidRequest:
    kind, expected, value, _schema = _parts(error)
    template, code = _OVER_MAX[kind]
    where = "a key of " if "propertyNames" in error.schema_path else ""
    message = template.format(expected=expected, size=len(value), where=where)
    return invalid(param, f"Invalid '{param}': {message}", code)


def _pattern(error: ValidationError, param: str) -> InvalidRequest:
    _kind, expected, value, _schema = _parts(error)
    where = f"key {_short(value)} of " if "propertyNames" in error.schema_path else ""
    return invalid(
        param,
        f"Invalid '{param}': {where}string does not match pattern. "
        f"Expected a string that matches the pattern '{expected}'.",
    )


_WORDING: dict[Any, Callable[[ValidationError, str], InvalidRequest | None]] = {
    "required": _required,
    "type": _type,
    "enum": _choice,
    "const": _choice,
    "minimum": _bound,
    "maximum": _bound,
    "minItems": _min_items,
    "maxItems": _over_max,
    "maxProperties": _over_max,
    "maxLength": _over_max,
    "pattern": _pattern,
}
"""OpenAI's wording per schema keyword (None, or a keyword not here: the generic message)."""


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
