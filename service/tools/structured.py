"""Structured output: pull one JSON value out of an answer and hold it to the schema.

Models asked for "JSON only" still wrap it in a code fence or add a sentence; the
first JSON object (or array) found is taken. `json_object` needs an object; a
`json_schema` format is validated with `jsonschema` (`schema_check`: never fetches,
matches patterns in linear time).
"""

from __future__ import annotations

import json
import re
from typing import Any

from service.tools import schema_check
from service.tools.options import OutputFormat

_FENCED = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.S)


def extract(text: str) -> Any:
    """The first JSON object/array in `text` (fenced or bare); ValueError if there is none."""
    candidates = [match.group(1) for match in _FENCED.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for index, char in enumerate(candidate):
            if char in "{[":
                try:
                    value, _ = decoder.raw_decode(candidate, index)
                except ValueError:
                    continue
                except RecursionError:  # thousands of levels: no answer anyone asked for
                    raise ValueError("the answer nested its JSON too deeply") from None
                return value
    raise ValueError("the answer contained no JSON")


def check(text: str, output: OutputFormat) -> tuple[str | None, str]:
    """(the JSON answer as compact text, "") if valid, else (None, what is wrong)."""
    try:
        value = extract(text)
    except ValueError as exc:
        return None, str(exc)
    if output.kind == "json_object" and not isinstance(value, dict):
        return None, "the answer was not a JSON object"
    if output.kind == "json_schema" and output.schema:
        problem = schema_check.mismatch(value, output.schema)  # no retrieval, RE2 patterns
        if problem is not None:
            return None, f"the JSON did not match the schema ({problem})"
    try:
        return json.dumps(value, ensure_ascii=False), ""
    except RecursionError:
        return None, "the answer nested its JSON too deeply"
