"""Holding a value to a client's JSON schema without the network and in linear time.

Structured output and tool arguments are checked against schemas the client sends.
`jsonschema.validate` would fetch any `$ref` it cannot resolve locally (urlopen: http,
file, ftp; no timeout) and run `pattern`/`patternProperties` on Python's backtracking
`re`, where one crafted pattern holds a worker's event loop for hours. So here:

- the registry resolves only what the schema itself holds; any retrieval raises
  (`referencing.exceptions.Unretrievable`), so nothing is ever fetched;
- `pattern`, `patternProperties` and `additionalProperties` (which consults the
  patterns) run on RE2 (`google-re2`), whose matching is linear in the text;
- every keyword application spends from a budget (`MAX_STEPS`), so a schema whose
  `anyOf`/`$ref` fan-out is exponential ends instead of running on.

Both tiers use it: the web tier (`client_schema`) to refuse a schema before anything is
enqueued, the worker to check answers. Plain module, no I/O.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import re2
from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    validators,
)
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

log = logging.getLogger(__name__)

MAX_STEPS = 50_000
"""Keyword applications one check may make (about 3 s of work); an answer usually needs hundreds."""
_DRAFTS = (Draft4Validator, Draft6Validator, Draft7Validator, Draft201909Validator, Draft202012Validator)
_steps: contextvars.ContextVar[list[int]] = contextvars.ContextVar("schema_steps")


class TooCostly(Exception):
    """The check spent its `MAX_STEPS`."""


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retrieve: never fetch; a reference outside the schema is unresolvable."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class


REGISTRY: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]  # attrs alias


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """`pattern` compiled by RE2, or `re2.error` (backreferences, lookaround, ...)."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _search(pattern: str, text: str) -> bool:
    try:
        return compiled(pattern).search(text) is not None
    except re2.error:
        return True  # the door refuses such patterns; an old job's cannot be held to them


def _pattern(validator: Validator, pattern: Any, instance: Any, _schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, extra: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [key for key in instance if key not in properties and not any(_search(p, key) for p in patterns)]
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        listed = ", ".join(map(repr, extras))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def _budgeted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def spend(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        steps = _steps.get(None)
        if steps is not None:
            steps[0] += 1
            if steps[0] > MAX_STEPS:
                raise TooCostly()
        return keyword(validator, value, instance, schema)

    return spend


_SAFE: dict[str, type[Any]] = {}


def _safe_class(draft: type[Any]) -> type[Any]:
    if draft.__name__ in _SAFE:
        return _SAFE[draft.__name__]
    keywords: dict[str, Callable[..., Any]] = dict(draft.VALIDATORS)
    keywords.update(
        pattern=_pattern, patternProperties=_pattern_properties, additionalProperties=_additional_properties
    )
    safe: type[Any] = validators.extend(  # type: ignore[no-untyped-call]  # jsonschema's stubs leave it untyped
        draft, {name: _budgeted(fn) for name, fn in keywords.items()}
    )
    _SAFE[draft.__name__] = safe
    return safe


def draft_of(schema: Mapping[str, Any]) -> type[Any]:
    """The jsonschema draft `$schema` names (2020-12 when absent or unknown)."""
    found = validators.validator_for(schema, default=Draft202012Validator)
    return found if found in _DRAFTS else Draft202012Validator


def validator(schema: Mapping[str, Any]) -> Any:
    """A validator for `schema` that never retrieves and matches patterns with RE2."""
    return _safe_class(draft_of(schema))(schema, registry=REGISTRY)


def check_schema(schema: Mapping[str, Any]) -> None:
    """SchemaError if `schema` is not a schema of its draft (the metaschema check, no client regex run)."""
    draft_of(schema).check_schema(schema)


def mismatch(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with `value` under `schema`, or None when it conforms.

    A schema that cannot be held to (not a schema, a reference it does not hold, endless
    recursion, more than MAX_STEPS of work) is reported in the log and lets `value` pass,
    as a broken schema did before: the door refuses most such schemas already.
    """
    token = _steps.set([0])
    try:
        check_schema(schema)
        error = best_match(validator(schema).iter_errors(value))
    except (SchemaError, Unresolvable, RecursionError, TooCostly) as exc:
        log.warning("event=client_schema_unchecked reason=%s", type(exc).__name__)
        return None
    finally:
        _steps.reset(token)
    return None if error is None else error.message
