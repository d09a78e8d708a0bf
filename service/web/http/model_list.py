"""`GET /v1/models` in the shape the caller speaks: OpenAI's list, or Anthropic's with `anthropic-version`.

Claude Code (2.1.126 and later) discovers a gateway's models with
`GET {base}/v1/models?limit=1000` and an `anthropic-version` header, caches the answer in
`~/.claude/cache/gateway-models.json`, and its `/model` picker shows only ids that contain
"claude" or "anthropic". So the list carries, beside the catalog, the picker ids of
`service.models.picker_ids` (each names the catalog model it maps to in its display
name), and a request with `anthropic-version` gets Anthropic's shape: `data[]` of
`{type: "model", id, display_name, created_at}` with `has_more`, `first_id`, `last_id`,
paged by `limit` (1–1000, default 20), `after_id` and `before_id` as Anthropic pages.
Anything else gets OpenAI's `{object: "list", data: [model cards]}`, all at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from service.errors import InvalidRequest
from service.models import MODEL_CREATED, ModelSpec, picker_ids

MODEL_CREATED_AT = (
    datetime.datetime.fromtimestamp(MODEL_CREATED, tz=datetime.UTC).isoformat().replace("+00:00", "Z")
)
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def entries(
    catalog: Sequence[ModelSpec], upstream: str, *, picker_first: bool = False
) -> list[tuple[str, ModelSpec, str]]:
    """Every listed id with the catalog model it means and a display name: the catalog, then the
    picker ids (first, for Claude Code's discovery, with `picker_first`)."""
    picker = [
        (name, spec, f"Copilot {spec.id} (maps to the gateway model '{spec.id}')")
        for name, spec in picker_ids(upstream)
        if spec in catalog
    ]
    models = [(spec.id, spec, f"{spec.id} ({upstream})") for spec in catalog]
    return picker + models if picker_first else models + picker


def openai_list(listed: Sequence[tuple[str, ModelSpec, str]]) -> dict[str, Any]:
    """OpenAI's model list: a model card per id (a picker id's card is its catalog model's, renamed)."""
    return {"object": "list", "data": [{**spec.card(), "id": name} for name, spec, _ in listed]}


def anthropic_list(listed: Sequence[tuple[str, ModelSpec, str]], query: Mapping[str, str]) -> dict[str, Any]:
    """Anthropic's model list page for `limit`, `after_id` / `before_id` (400 naming a bad one)."""
    limit = _limit(query.get("limit"))
    ids = [name for name, _, _ in listed]
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise InvalidRequest("after_id: cannot be combined with before_id", param="after_id")
    start, stop = 0, len(ids)
    if after:
        start = _position(ids, after, "after_id") + 1
        stop = min(len(ids), start + limit)
    elif before:
        stop = _position(ids, before, "before_id")
        start = max(0, stop - limit)
    else:
        stop = min(len(ids), limit)
    page = listed[start:stop]
    data = [
        {"type": "model", "id": name, "display_name": display, "created_at": MODEL_CREATED_AT}
        for name, _, display in page
    ]
    return {
        "data": data,
        "has_more": start > 0 if before else stop < len(ids),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidRequest("limit: Input should be a valid integer", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: Input should be between 1 and {MAX_LIMIT}", param="limit")
    return limit


def _position(ids: list[str], wanted: str, param: str) -> int:
    if wanted not in ids:
        raise InvalidRequest(f"{param}: no model with id '{wanted}' in this list", param=param)
    return ids.index(wanted)
