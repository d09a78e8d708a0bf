"""OpenAI's list pages (`order`, `limit`, `after`) over items already in memory.

Conversation items and a response's input items are paged the same way, with the same
400s for a bad `order` or `limit`, so both endpoints render their lists here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Response, jsonify, request

from service.errors import InvalidRequest


def page(items: Sequence[dict[str, Any]]) -> Response:
    """One page of `items` (oldest first) as OpenAI's list object, per the request's query."""
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            "Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value"
        )
    try:
        limit = int(request.args.get("limit", "20"))
    except ValueError:
        raise InvalidRequest(
            "Invalid 'limit': expected an integer.", param="limit", code="invalid_type"
        ) from None
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid 'limit': expected 1 to 100.", param="limit", code="invalid_value")
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = request.args.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    shown = ordered[:limit]
    return jsonify(
        {
            "object": "list",
            "data": shown,
            "first_id": shown[0]["id"] if shown else None,
            "last_id": shown[-1]["id"] if shown else None,
            "has_more": len(ordered) > limit,
        }
    )
