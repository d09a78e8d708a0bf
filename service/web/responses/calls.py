"""The function names of the calls a `previous_response_id` made, for the outputs that answer them.

A Responses client continuing with `previous_response_id` sends only
`function_call_output` items (`call_id` + `output`): the calls themselves live in the stored
previous response. The upstream must still see which function each result belongs to
(`<tool_result id=… name="get_weather">`), so the names are read from that response's
output before the request is folded into turns.
"""

from __future__ import annotations

import json
from typing import Any

from service.state.response_store import ResponseStore


def previous_call_names(store: ResponseStore, raw: bytes, owner: str) -> dict[str, str]:
    """call id → function name of the calls in the request's previous response ({} when none)."""
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}  # the parser says what is wrong with the body (too deep included)
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    if not isinstance(previous, str) or not previous:
        return {}
    response = store.get(previous, owner)
    if response is None:
        return {}  # the parser and the pipeline answer the 404
    return {
        str(item.get("call_id")): str(item.get("name"))
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call" and item.get("call_id")
    }
