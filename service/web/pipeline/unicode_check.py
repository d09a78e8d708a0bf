"""Lone surrogates in a request body: a 400 naming the field, not a 500 later.

JSON may spell a UTF-16 surrogate half on its own (`"\\ud800"`); Python's parser keeps it
in the `str`, and the first `.encode()` downstream (a Redis write, the upstream socket,
a log line) fails with `UnicodeEncodeError`. Such text cannot reach the model anyway,
so every surface refuses it at the door (`request.parse_body` calls `check`), naming
where it is the way OpenAI names params (`messages[0].content`).
"""

from __future__ import annotations

from typing import Any

from service.errors import InvalidRequest


def _bad(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find(body: dict[str, Any]) -> str | None:
    """The param holding a lone surrogate (in a value or a key), or None. Iterative."""
    stack: list[tuple[str, Any]] = [(name, value) for name, value in reversed(body.items())]
    for name in body:
        if _bad(name):
            return "(a field name)"
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _bad(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if _bad(key):
                    return path
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def check(body: dict[str, Any]) -> None:
    """400 naming the first field that holds a lone surrogate."""
    where = find(body)
    if where is not None:
        raise InvalidRequest(
            f"Invalid '{where}': the text holds a lone UTF-16 surrogate (such as \\ud800), which is not "
            "valid Unicode text; send well-formed text.",
            param=where,
            code="invalid_value",
        )
